"""Route a rule's logging, warnings and progress bars into its Snakemake log file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def log_to(path: str | os.PathLike | None) -> Iterator[None]:
    """Send logging and stderr to ``path`` (or keep stderr when None); log any exception."""
    if path is None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        yield
        return
    with open(path, "w") as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        stderr, sys.stderr = sys.stderr, fh
        try:
            yield
        except BaseException:
            logging.getLogger("skinlesion").exception("rule failed")
            raise
        finally:
            sys.stderr = stderr
            root.removeHandler(handler)
