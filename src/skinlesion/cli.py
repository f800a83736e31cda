"""Command line: ``skinlesion <command>`` or ``python -m skinlesion <command>``.

The workflow (``snakemake``) is the main entry point; these commands expose the same
functions for use outside it.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from skinlesion.config import DEFAULT_CONFIG


def _download(args: argparse.Namespace) -> None:
    from skinlesion.config import data_files, load_config
    from skinlesion.data.download import download

    overrides = {"data_dir": args.data_dir} if args.data_dir else {}
    config = load_config(args.configfile, overrides)
    for name, spec in data_files(config).items():
        dest = Path(args.out_dir) / name
        if dest.exists():
            print(f"{dest} exists; skipping")
            continue
        download(spec, dest, data_dir=config["data_dir"], dataverse=config["dataverse"])
        print(f"{dest} verified")


def _make_sample(args: argparse.Namespace) -> None:
    from skinlesion.data.sample import make_sample

    subset = make_sample(args.mirror, args.out, lesions_per_class=args.lesions_per_class, seed=args.seed)
    print(f"{args.out}: {len(subset)} images of {subset['lesion_id'].nunique()} lesions")


def _mirror(args: argparse.Namespace) -> None:
    from skinlesion.data.mirror import make_mirror

    sums = make_mirror(args.source, args.out, size=(args.width, args.height), quality=args.quality)
    for name, digest in sums.items():
        print(f"{digest}  {Path(args.out) / name}")


def _predict(args: argparse.Namespace) -> None:
    from skinlesion.evaluate.predict import predict_images

    table = predict_images(
        args.checkpoint, args.images, args.out, batch_size=args.batch_size, tta=args.tta, device=args.device
    )
    print(f"{args.out}: {len(table)} images")


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from skinlesion.serve.service import create_app

    app = create_app(
        args.model,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_files=args.max_files,
        threads=args.threads,
        precision=args.precision,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


def _app(args: argparse.Namespace) -> None:
    import os

    env = os.environ | {"SKINLESION_MODEL": str(Path(args.model).resolve())}
    if args.service:
        env["SKINLESION_SERVICE_URL"] = args.service.rstrip("/")
    if args.checkpoint:
        env["SKINLESION_CHECKPOINT"] = str(Path(args.checkpoint).resolve())
    script = Path(__file__).parent / "serve" / "app.py"
    command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true"]
    command += ["--server.address", args.host, "--server.port", str(args.port), "--browser.gatherUsageStats", "false"]
    command += ["--client.toolbarMode", "viewer"]
    # Become the Streamlit server (no child process), so that a signal to this process stops it.
    os.execve(sys.executable, command, env)


# reStructuredText and Markdown markup in docstrings and help strings: ``literal``, `literal`,
# :role:`target` (Sphinx roles), **strong**.
MARKUP = re.compile(r"(?::[\w:.-]+:)?``?([^`]+?)``?|\*\*([^*]+)\*\*")


def plain(text: str) -> str:
    """``text`` without its reStructuredText markup, as a terminal shows help: ``skinlesion predict``
    and :func:`main` become skinlesion predict and main."""
    return MARKUP.sub(lambda m: m.group(1) or m.group(2), text)


class PlainHelpFormatter(argparse.HelpFormatter):
    """Help text with the docstrings' markup stripped (:func:`plain`)."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return plain(super()._expand_help(action))


class Parser(argparse.ArgumentParser):
    """An argument parser whose help is plain text; its subcommands' parsers are of this class too."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", PlainHelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="skinlesion", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("download", help="fetch and verify the raw HAM10000 files")
    p.add_argument("--configfile", default=DEFAULT_CONFIG, help="workflow config (default: %(default)s)")
    p.add_argument("--data-dir", help="copy from this local mirror instead of Dataverse")
    p.add_argument("--out-dir", default="results/raw", help="where the files go (default: %(default)s)")
    p.set_defaults(func=_download)

    p = sub.add_parser("make-sample", help="build a small lesion-grouped sample mirror from a full mirror")
    p.add_argument("--mirror", required=True, help="full HAM10000 mirror directory")
    p.add_argument("--out", default="data/sample", help="output directory (default: %(default)s)")
    p.add_argument("--lesions-per-class", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_make_sample)

    p = sub.add_parser("mirror", help="build a downscaled HAM10000 mirror from the Dataverse originals")
    p.add_argument("--source", required=True, help="folder with the two original image zips and HAM10000_metadata.csv")
    p.add_argument("--out", required=True, help="output mirror directory")
    p.add_argument("--width", type=int, default=200, help="image width in pixels (default: %(default)s)")
    p.add_argument("--height", type=int, default=150, help="image height in pixels (default: %(default)s)")
    p.add_argument("--quality", type=int, default=75, help="JPEG quality, 1-100 (default: %(default)s)")
    p.set_defaults(func=_mirror)

    p = sub.add_parser("predict", help="class and malignancy probabilities for a folder or zip of images")
    p.add_argument("--checkpoint", required=True, help="a best.ckpt written by the train rule")
    p.add_argument("--images", required=True, help="a folder of JPEG/PNG images, or a zip of them")
    p.add_argument("--out", required=True, help="output CSV: image_id, akiec..vasc, p_malignant, dx")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tta", action="store_true", help="average over the 8 flips/90-degree rotations")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: the GPU when there is one")
    p.set_defaults(func=_predict)

    p = sub.add_parser("serve", help="the inference service (FastAPI + ONNX Runtime) on an exported tier")
    p.add_argument("--model", default="results/export/baseline_cnn", help="export folder (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest request body (default: %(default)s)")
    p.add_argument("--max-files", type=int, default=64, help="most images per request (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: all cores)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "int8"), help="int8: the export's static int8 model")
    p.set_defaults(func=_serve)

    p = sub.add_parser("app", help="the Streamlit app on an exported tier")
    p.add_argument("--model", default="results/export/baseline_cnn", help="export folder (default: %(default)s)")
    p.add_argument("--service", help="URL of a running `skinlesion serve` (default: in-process ONNX Runtime)")
    p.add_argument("--checkpoint", help="checkpoint for Grad-CAM (default: the one the export's sidecar names)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8501)
    p.set_defaults(func=_app)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
