"""The input guard measured: acceptance of real images, refusal of images that are not dermatoscopic.

    python benchmarks/guard.py --run-dir /path/to/workdir [--tiers ...] [--out benchmarks/results/guard.json]

``--run-dir`` is a workflow directory with trained tiers (``results/models/{tier}/best.ckpt``) and its
data stage. Each tier is exported with the input guard of the configuration (``export.guard``: fitted
on the training split, its threshold on the validation split) into ``results/guard/{tier}``, then:

- **acceptance** of in-distribution images by the deployed guard (quality checks and the exported
  out-of-distribution score): the validation split (where the threshold was set), the test split (a
  test-split reading, recorded in the run's ledger; nothing is chosen from it), and the full-size
  HAM10000 uploads of ``--fullres`` (as a user uploads them, so the size check applies too);
- **refusal** of the out-of-distribution images that ship with installed packages or are generated
  (:func:`skinlesion.serve.guard.reference_ood_images`), with each image's reasons;
- **the three scores compared** (Mahalanobis, energy, maximum softmax probability): AUROC of test
  split against out-of-distribution images, and the share of those images each refuses at its own
  validation threshold, the quality checks left out.

``--out`` writes it as JSON with the command, hardware, date and commit (docs/deployment.md renders it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from skinlesion.config import load_config
from skinlesion.serve.export import Deployed, export_tier, fit_gaussian
from skinlesion.serve.guard import SCORES, reference_ood_images, threshold_for_share
from skinlesion.serve.inference import OnnxClassifier, Upload, read_upload, to_input
from skinlesion.tables import load_split_table, record_test_scoring
from skinlesion.train.module import load_classifier

ROOT = Path(__file__).resolve().parents[1]


def acceptance(clf: OnnxClassifier, uploads: list[Upload]) -> dict:
    """The deployed guard on real images: accepted share, and refusals by reason."""
    preds = []
    for i in range(0, len(uploads), 256):
        preds += clf.predict(uploads[i : i + 256])
    counts: dict[str, int] = {}
    for p in preds:
        for r in p.reasons:
            counts[r] = counts.get(r, 0) + 1
    return {"images": len(preds), "accepted": float(np.mean([p.accepted for p in preds])), "refused_by_reason": counts}


def all_scores(deployed: Deployed, squares: list[np.ndarray], size: int) -> dict[str, np.ndarray]:
    out: dict[str, list] = {s: [] for s in SCORES}
    for i in range(0, len(squares), 256):
        x = torch.from_numpy(np.stack([to_input(sq, size) for sq in squares[i : i + 256]]))
        with torch.no_grad():
            _, scores = deployed.scores(x)
        for s in SCORES:
            out[s].append(scores[s].numpy())
    return {s: np.concatenate(v).astype(np.float64) for s, v in out.items()}


def measure_tier(run_dir: Path, tier: str, guard: dict, fullres: Path | None) -> dict:
    from sklearn.metrics import roc_auc_score

    data = run_dir / "results" / "data"
    export = run_dir / "results" / "guard" / tier
    export.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / "results" / "models" / tier / "best.ckpt"
    args = (str(ckpt), str(data / "images.npy"), str(data / "index.csv"), str(data / "development.csv"))
    export_tier(*args, export / "model.onnx", export / "model.json", tier=tier, guard=guard)
    clf = OnnxClassifier(export)
    table = load_split_table(data / "index.csv", data / "split.csv")
    cache = np.load(data / "images.npy", mmap_mode="r")
    squares = {
        s: [np.asarray(cache[r]) for r in table.loc[table["split"] == s, "row"]] for s in ("train", "val", "test")
    }
    ood = reference_ood_images()
    ood_uploads = [read_upload(n, d, size=clf.cache_size, max_pixels=10**9) for n, d in ood]
    result = {
        "tier": tier,
        "guard": clf.contract["guard"],
        "acceptance": {s: acceptance(clf, [Upload(s, sq) for sq in squares[s]]) for s in ("val", "test")},
        "ood_images": [
            {"image": p.name, "accepted": p.accepted, "reasons": p.reasons} for p in clf.predict(ood_uploads)
        ],
    }
    if fullres is not None:
        files = sorted(fullres.glob("*.jpg"))
        uploads = [read_upload(f.name, f.read_bytes(), size=clf.cache_size, max_pixels=10**9) for f in files]
        result["acceptance"]["fullres"] = acceptance(clf, uploads)

    # The three scores side by side, from the checkpoint (the exported graph holds the configured one).
    contract = clf.contract
    model = load_classifier(ckpt).float().eval()
    deployed = Deployed(model, contract["temperature"] or 1.0, contract["class_prior"]).eval()
    train = table[table["split"] == "train"]
    labels = train["dx"].map({c: i for i, c in enumerate(contract["class_names"])}).to_numpy()
    if contract["task"] == "binary":
        labels = train["malignant"].to_numpy().astype(int)
    with torch.no_grad():
        features = torch.cat(
            [
                deployed.features(
                    torch.from_numpy(np.stack([to_input(sq, clf.input_size) for sq in squares["train"][i : i + 256]]))
                )
                for i in range(0, len(squares["train"]), 256)
            ]
        ).numpy()
    deployed.set_gaussian(*fit_gaussian(features, labels, len(contract["class_names"])))
    val, test = (all_scores(deployed, squares[s], clf.input_size) for s in ("val", "test"))
    far = all_scores(deployed, [u.square for u in ood_uploads], clf.input_size)
    share = guard["accept_share"]
    result["scores"] = {
        s: {
            "auroc_test_vs_ood": float(
                roc_auc_score(np.r_[np.zeros(len(test[s])), np.ones(len(far[s]))], np.r_[test[s], far[s]])
            ),
            "test_accepted": float(np.mean(test[s] <= threshold_for_share(val[s], share))),
            "ood_refused": float(np.mean(far[s] > threshold_for_share(val[s], share))),
        }
        for s in SCORES
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--tiers", nargs="+", default=["baseline_cnn", "resnet", "transfer"])
    parser.add_argument("--fullres", type=Path, help="a folder of full-size HAM10000 JPEGs, read as uploads")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    guard = load_config()["export"]["guard"]
    rows = []
    for tier in args.tiers:
        rows.append(measure_tier(args.run_dir, tier, guard, args.fullres))
        print(json.dumps({k: rows[-1][k] for k in ("tier", "acceptance", "scores")}), flush=True)
    from skinlesion.provenance import git_commit, measurement

    command = "python benchmarks/guard.py " + " ".join(sys.argv[1:])
    record_test_scoring(
        args.run_dir / "results" / "test_ledger.csv",
        f"benchmarks/guard.py {' '.join(args.tiers)}: input guard acceptance on the test split",
        {"git_commit": git_commit(ROOT)},
    )
    if args.out:
        from skinlesion.io import atomic_path

        record = {"kind": "guard", "rows": rows, **measurement(command, git_commit(ROOT))}
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
