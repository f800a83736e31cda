"""Numbers in the docs come from the files the measurements wrote, never from typing.

A Markdown file marks each rendered block with the results file it comes from::

    <!-- rendered from benchmarks/results/selection/baseline_cnn.json -->
    ... (generated text) ...
    <!-- end rendered -->

``python -m skinlesion.rendered README.md docs/*.md`` regenerates every such block from its file;
``--check`` exits non-zero, naming the block, where the text differs from what its file says (a
test runs it). A results file is JSON with a ``kind`` that picks its renderer; every kind records
the command, hardware, date and commit of its measurement.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

from skinlesion.evaluate.goals import judge
from skinlesion.formatting import HEADLINE, OPERATING, format_ci, format_interval, format_value, headers, metric
from skinlesion.io import atomic_path
from skinlesion.train.selection import ALPHA, METRICS, adopt, false_adoption_rate

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"(<!-- rendered from (\S+) -->\n)(.*?)(<!-- end rendered -->)", re.DOTALL)


def _pm(mean: float, sd: float) -> str:
    return f"{mean:.3f} ± {sd:.3f}"


def _signed(mean: float, sd: float) -> str:
    return f"{mean:+.3f} ± {sd:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def _stamp(record: dict) -> str:
    """What every results file records of its measurement: command, hardware, commit, date."""
    return f"`{record['command']}`, {record['hardware']}, commit {record['commit'][:10]}, {record['date']}"


def selection(record: dict) -> str:
    """A cross-validation comparison (``benchmarks/record.py selection``): one row per variant."""
    rows = record["rows"]
    k = record["folds"]
    stat = {(r["variant"], r["fold"]): r for r in rows if r["fold"] in ("mean", "sd")}
    bal, auroc = (metric(key) for key in METRICS)  # the order adopt() takes them in
    header = ["variant", "settings", bal.header, auroc.header, f"Δ {bal.header}"]
    header += [f"Δ {auroc.header}", f"Δ per fold ({bal.short})", "replaces the default?"]
    table = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mean, sd = stat[variant, "mean"], stat[variant, "sd"]
        folds = [r for r in rows if r["variant"] == variant and r["fold"] not in ("mean", "sd")]
        settings = ", ".join(f"`{key}: {json.dumps(v)}`" for key, v in record["variants"].get(variant, {}).items())
        cells = [
            variant,
            settings or "the tier's defaults",
            *(_pm(mean[key], sd[key]) for key in METRICS),
        ]
        if variant == "default":
            cells += ["—", "—", "—", "—"]
        else:
            deltas = [(mean[f"delta_{m}"], sd[f"delta_{m}"]) for m in METRICS]
            cells += [_signed(*deltas[0]), _signed(*deltas[1])]
            cells.append(" ".join(f"{f['delta_balanced_accuracy']:+.3f}" for f in folds))
            cells.append("yes" if adopt(*deltas, k) else "no")  # the select rule's, re-applied to the record
        table.append(cells)
    return (
        _table(header, table)
        + f"\n\n{record['tier']}, {k} lesion-grouped folds of the development data, mean ± sd over folds, per image; "
        f"Δ: paired difference from the default on the same fold; a variant replaces the default when a one-sided "
        f"paired t-test finds its balanced accuracy higher at level {ALPHA:.2f} and its malignant AUROC falls by less "
        f"than one standard error (a variant that changes nothing is adopted {false_adoption_rate(k):.1%} of the "
        f"time). {_stamp(record)}; {record['trainings']} trainings "
        f"in {record['wall_minutes']:.0f} min of wall time.\n"
    )


def _ci(block: dict, key: str) -> str:
    return format_ci(block["metrics"][key], metric(key).spec)


def _pair(block: dict | None, metrics=HEADLINE, ci: bool = False) -> str:
    if block is None:
        return "—"
    if "metrics" in block:
        return " / ".join(
            _ci(block, m) if ci else format_value(block["metrics"][m]["value"], metric(m).spec) for m in metrics
        )
    return " / ".join(format_value(block[m], metric(m).spec) for m in metrics)


def _run_caption(record: dict) -> str:
    test = record["models"][0]["test"]
    return (
        f"{_stamp(record)}: one run from raw data to report, {record['wall_minutes']:.1f} min of wall time. Test "
        f"split: {test['n_images']:,} images of {test['n_lesions']:,} lesions; 95 % CIs from lesion-bootstrap "
        f"resamples; {'8-fold test-time augmentation; ' if record['tta'] else ''}malignant threshold chosen on the "
        f"validation split for ≥ {record['target_sensitivity']:.0%} sensitivity. Recommended by validation balanced "
        f"accuracy: {record['recommended']}."
        + (
            f" The test split was scored {len(record['test_ledger'])} times in the run's results folder (its ledger)."
            if "test_ledger" in record
            else ""
        )
    )


def _shape(model: dict) -> str:
    return f"{model['image_size']} px, {model['epochs']}" if "epochs" in model else "—"


def _deployed(model: dict, precision: str = "fp32") -> str:
    """The export as served (ONNX, no TTA, its temperature and threshold): bal. acc. / AUROC / sens. / spec."""
    block = model.get("deployed", {}).get(precision, {}).get("test")
    if block is None:
        return "—"
    return _pair(block) + " / " + _pair(block, OPERATING)


def workflow(record: dict) -> str:
    """The headline table of a whole workflow run (``benchmarks/record.py workflow``)."""
    pair, operating = headers(HEADLINE, short=True), headers(OPERATING, short=True)
    header = ["model", "input, epochs", f"validation: {pair}"]
    header += [f"test: {metric(key).short} (95 % CI)" for key in HEADLINE] + [f"test: {operating}"]
    header += [f"as deployed (ONNX fp32, no TTA): {pair} / {operating}"]
    int8 = any("int8" in m.get("deployed", {}) for m in record["models"])
    header += ["as deployed, int8"] if int8 else []
    header += [f"test + metadata: {pair}", f"per lesion + metadata: {pair}"]
    table = []
    for model in record["models"]:
        test = model["test"]
        cells = [model["model"], _shape(model), _pair(model.get("validation"))]
        cells += [_ci(test, key) for key in HEADLINE] + [_pair(test, OPERATING), _deployed(model)]
        cells += [_deployed(model, "int8")] if int8 else []
        cells += [_pair(model.get("test_with_metadata")), _pair(model.get("test_with_metadata_per_lesion"))]
        table.append(cells)
    return _table(header, table) + "\n\n" + _run_caption(record) + "\n"


def workflow_per_lesion(record: dict) -> str:
    """Per-image against per-lesion scores of a workflow run, each lesion scored once."""
    pair, operating = headers(HEADLINE, short=True), headers(OPERATING, short=True)
    header = ["model", f"per image: {pair}", f"per lesion: {pair} (95 % CI)"]
    header += ["per lesion + metadata (95 % CI)", f"per lesion + metadata: {operating}"]
    table = []
    for model in record["models"]:
        meta = model.get("test_with_metadata_per_lesion")
        cells = [model["model"], _pair(model["test"]), _pair(model["test_per_lesion"], ci=True)]
        table.append(cells + [_pair(meta, ci=True), _pair(meta, OPERATING)])
    lesions = record["models"][0]["test_per_lesion"]["n_lesions"]
    return _table(header, table) + f"\n\n{lesions:,} test lesions, each once. " + _run_caption(record) + "\n"


def workflow_runtime(record: dict) -> str:
    """Where a workflow run's time and memory went, per tier (Snakemake's benchmark files, history.csv)."""
    header = ["tier", "input, epochs", "train rule", "median epoch (range)", "data wait (median epoch)"]
    header += ["train peak RSS", "evaluate rule"]
    table = []
    for model in record["models"]:
        evaluate = f"{model['evaluate']['minutes']:.1f} min"
        if "train" in model:
            low, high = model["epoch_s_range"]
            cells = [model["model"], _shape(model), f"{model['train']['minutes']:.1f} min"]
            cells += [f"{model['median_epoch_s']:.1f} s ({format_interval(low, high, '')})"]
            cells += [f"{model['data_wait_pct']:.1f} %"]
            table.append(cells + [f"{model['train']['peak_rss_mb']:,} MB", evaluate])
        else:
            table.append([model["model"], "—", "—", "—", "—", "—", evaluate])
    return (
        _table(header, table)
        + f"\n\nThe whole run: {record['wall_minutes']:.1f} min, driver peak RSS {record['driver_peak_rss_mb']:,} MB. "
        + _run_caption(record)
        + "\n"
    )


def _verdict(met: bool) -> str:
    return "met" if met else "not met"


def workflow_goals(record: dict) -> str:
    """A workflow run against the goals (:func:`skinlesion.evaluate.goals.judge`): the recommended
    model per test image, and the budgets."""
    verdicts = judge(record)
    table = []
    for row in verdicts["metrics"]:
        spec = metric(row["key"])
        cells = [f"{spec.header} (goal ≥ {row['goal']:.2f})", format_ci(row["entry"], spec.spec)]
        cells += [_verdict(row["met"]), format_ci(row["deployed"], spec.spec) if row["deployed"] else "—"]
        table.append(cells)
    train, wall = verdicts["train"], verdicts["wall"]
    table.append([f"longest train rule (budget {train['budget']} min)", f"{train['minutes']:.1f} min "
                  f"({train['model']})", _verdict(train["met"]), "—"])  # fmt: skip
    table.append([f"whole run (budget {wall['budget']} min)", f"{wall['minutes']:.1f} min",
                  _verdict(wall["met"]), "—"])  # fmt: skip
    header = [f"goal, for {verdicts['model']} (recommended by validation), per test image", "this run", "verdict"]
    header.append("as deployed (ONNX fp32, no TTA)")
    return _table(header, table) + f"\n\n{_stamp(record)}.\n"


def train_throughput(record: dict) -> str:
    """Training throughput per tier and augmentation path (``benchmarks/train_throughput.py --out``)."""
    header = ["tier", "augmentation", "input", "precision", "images/s: median (each run)", "data wait"]
    header += ["batch augmentation", "peak RSS"]
    table = []
    for r in record["rows"]:
        runs = r.get("runs", [r["images_per_s"]])
        rate = f"{r['images_per_s']:.0f}" + (f" ({', '.join(f'{x:.0f}' for x in runs)})" if len(runs) > 1 else "")
        cells = [r["tier"], r["path"], f"{r['image_size']} px", r["precision"], rate]
        table.append(
            cells + [f"{r['data_wait_pct']:.1f} %", f"{r['batch_augment_pct']:.1f} %", f"{r['peak_rss_mb']:,} MB"]
        )
    text = _table(header, table)
    rate = {(r["tier"], r["path"]): r["images_per_s"] for r in record["rows"]}
    both = [t for t in dict.fromkeys(r["tier"] for r in record["rows"]) if {(t, "worker"), (t, "device")} <= set(rate)]
    if both:
        ratios = ", ".join(f"{t} {rate[t, 'device'] / rate[t, 'worker']:.2f}×" for t in both)
        text += f"\n\nThe device path's speed over the worker path's (medians): {ratios}."
    return text + f"\n\n{_stamp(record)}.\n"


def inference(record: dict) -> str:
    """Inference speed per exported tier: eager PyTorch, ONNX Runtime, its int8 model (``benchmarks/inference.py``)."""
    int8 = any("int8_img_per_s" in r for r in record["rows"])
    header = ["tier", "input", "eager: images/s", "ONNX Runtime: images/s (× eager)", "single image: eager / ONNX"]
    if int8:
        deltas = headers(HEADLINE, short=True, sep=" / Δ ")
        header += ["int8: images/s (× eager)", f"int8 on validation: Δ {deltas}, argmax agreement"]
    table = []
    for r in record["rows"]:
        cells = [r["tier"], f"{r['input']} px", f"{r['eager_img_per_s']:.0f}"]
        cells += [f"{r['onnx_img_per_s']:.0f} ({r['onnx_throughput_ratio']:.2f}×)"]
        cells += [f"{r['eager_single_ms']:.1f} / {r['onnx_single_ms']:.1f} ms"]
        if "int8_img_per_s" in r:
            v = r["int8_validation"]
            delta = [v["int8"][m] - v["fp32"][m] for m in HEADLINE]
            cells += [f"{r['int8_img_per_s']:.0f} ({r['int8_throughput_ratio']:.2f}×)"]
            cells += [f"{delta[0]:+.3f} / {delta[1]:+.3f}, {v['argmax_agreement']:.1%} of {v['images']:,} images"]
        elif int8:
            cells += ["—", "—"]
        table.append(cells)
    return (
        _table(header, table)
        + f"\n\nMedian throughput over batches of {record['rows'][0]['images']} validation images, "
        f"{record['threads']} threads for every engine. {_stamp(record)}.\n"
    )


def guard(record: dict) -> str:
    """The input guard per tier (``benchmarks/guard.py --out``): acceptance of real images, refusal of
    images that are not dermatoscopic, and the three out-of-distribution scores compared."""
    scores = record["rows"][0]["scores"]
    header = ["tier", "accepted: val", "test", "full-size uploads", "not dermatoscopic: refused"]
    header += [f"{s}: AUROC / refused" for s in scores]
    table = []
    for r in record["rows"]:
        acc = r["acceptance"]
        refused = [i for i in r["ood_images"] if not i["accepted"]]
        cells = [r["tier"]] + [
            f"{acc[k]['accepted']:.1%} of {acc[k]['images']:,}" if k in acc else "—" for k in ("val", "test", "fullres")
        ]
        cells.append(f"{len(refused)} of {len(r['ood_images'])}")
        cells += [f"{v['auroc_test_vs_ood']:.3f} / {v['ood_refused']:.0%}" for v in r["scores"].values()]
        table.append(cells)
    reasons: dict[str, set] = {}
    accepted_by: dict[str, list] = {}
    for r in record["rows"]:
        for i in r["ood_images"]:
            reasons.setdefault(i["image"], set()).update(i["reasons"])
            if i["accepted"]:
                accepted_by.setdefault(i["image"], []).append(r["tier"])
    listed = "; ".join(
        f"{name}: {', '.join(sorted(rs))}"
        + (f" (accepted by {', '.join(accepted_by[name])})" if name in accepted_by else "")
        for name, rs in reasons.items()
    )
    deployed = record["rows"][0]["guard"]["ood"]
    return (
        _table(header, table)
        + f"\n\nDeployed: quality checks and the {deployed['score']} score at the threshold accepting "
        f"{deployed['accept_share']:.0%} of the validation split. The score columns: each score alone (no quality "
        "check), AUROC of test split against the not-dermatoscopic images, and the share of those it refuses at "
        f"its own validation threshold. Reasons given, over the tiers: {listed}. {_stamp(record)}.\n"
    )


def data_stage(record: dict) -> str:
    """Wall time of the data stage from scratch (``benchmarks/data_stage.py --out``)."""
    seconds = record["seconds"]
    runs = ", ".join(f"{t:.1f}" for t in seconds)
    return (
        f"Median **{statistics.median(seconds):.1f} s** over {len(seconds)} runs ({runs} s), {record['cores']} cores: "
        f"{_stamp(record)}.\n"
    )


def load_test(record: dict) -> str:
    """The service under load (``benchmarks/load_test.py --out``)."""
    return (
        f"**{record['throughput_rps']:.1f} requests/s, p50 {record['p50_ms']:.0f} ms, p95 {record['p95_ms']:.0f} ms, "
        f"p99 {record['p99_ms']:.0f} ms**; {record['requests']:,} requests, {record['failures']} failed, "
        f"{record['service_errors']} counted by the service's own error counter ({record['users']} users for "
        f"{record['duration']}). {_stamp(record)}.\n"
    )


def containers(record: dict) -> str:
    """The image's size, build times and the sample workflow in it (``benchmarks/containers.py --out``)."""
    native, inside = (statistics.median(record[k]) for k in ("sample_workflow_native_s", "sample_workflow_container_s"))
    rows = [
        ["image size", f"{record['image_bytes'] / 1e9:.2f} GB"],
        ["wheelhouse (`pip wheel` of requirements.lock)", f"{record['wheelhouse_s']:.0f} s"],
        ["cold build (no layer cache)", f"{record['cold_build_s']:.0f} s"],
        ["warm build (after a source change)", f"{record['warm_build_s']:.0f} s"],
        ["bundled-sample workflow, native", f"{native:.0f} s"],
        ["bundled-sample workflow, in the image", f"{inside:.0f} s ({inside / native:.2f}× native)"],
    ]
    runs = len(record["sample_workflow_native_s"])
    return (
        _table(["", "measured"], rows)
        + f"\n\nBase image {record['base']}; workflow times are medians of {runs} run(s) each; 1-minute load "
        f"average at the start {record['load_average_at_start']:.1f}. {_stamp(record)}.\n"
    )


def _minutes(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s"


def ci_run(record: dict) -> str:
    """`.ci/run` from a fresh clone (``benchmarks/ci_run.py --out``): install and test suite."""
    counts = ", ".join(f"{n} {what}" for what, n in record["counts"].items())
    before = ", ".join(record["preinstalled"]) or "none"
    cache = "podman's images and layer cache deleted first" if record["podman_reset"] else "podman's cache kept"
    return (
        f"**{_minutes(record['wall_s'])}** in all on {record['cores']} cores: install "
        f"{_minutes(record['install_s'])}, `make test` {_minutes(record['pytest_s'])} ({counts}). The clone had no "
        f"`.venv` and no wheelhouse; {cache}; apt tools already installed: {before}. {_stamp(record)}.\n"
    )


# (kind, view) -> renderer; a block names its view after '#': "<!-- rendered from FILE#runtime -->".
RENDERERS = {
    ("selection", ""): selection,
    ("workflow", ""): workflow,
    ("workflow", "per_lesion"): workflow_per_lesion,
    ("workflow", "runtime"): workflow_runtime,
    ("workflow", "goals"): workflow_goals,
    ("train_throughput", ""): train_throughput,
    ("inference", ""): inference,
    ("guard", ""): guard,
    ("data_stage", ""): data_stage,
    ("load_test", ""): load_test,
    ("containers", ""): containers,
    ("ci_run", ""): ci_run,
}


def render_block(source: str, root: Path = ROOT) -> str:
    file, _, view = source.partition("#")
    path = root / file
    if not path.is_file():
        raise FileNotFoundError(f"rendered block: its source {file} does not exist")
    record = json.loads(path.read_text())
    if (record.get("kind"), view) not in RENDERERS:
        known = sorted("#".join(key).rstrip("#") for key in RENDERERS)
        raise ValueError(f"{source}: kind {record.get('kind')!r}, view {view!r} has no renderer; known: {known}")
    return RENDERERS[record.get("kind"), view](record)


def render_text(text: str, root: Path = ROOT) -> str:
    """``text`` with every rendered block regenerated from its source file."""
    return BLOCK.sub(lambda m: m.group(1) + render_block(m.group(2), root) + m.group(4), text)


def stale_blocks(path: Path, root: Path = ROOT) -> list[str]:
    """The sources of the blocks of ``path`` whose text differs from what their files say."""
    text = path.read_text()
    return [m.group(2) for m in BLOCK.finditer(text) if m.group(3) != render_block(m.group(2), root)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the docs' measured tables from their results files.")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="change nothing; fail where a block is stale")
    args = parser.parse_args(argv)
    stale = []
    for path in args.files:
        if args.check:
            stale += [(path, source) for source in stale_blocks(path)]
        else:
            text = render_text(path.read_text())
            with atomic_path(path) as tmp:
                tmp.write_text(text)
    for path, source in stale:
        print(f"stale: {path}: block from {source} (run python -m skinlesion.rendered {path})", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
