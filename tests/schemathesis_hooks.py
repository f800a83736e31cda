"""Real images for schemathesis to upload to ``POST /predict`` (whose parts are image/jpeg or image/png).

The pytest contract test imports this module; for the CLI, name it in SCHEMATHESIS_HOOKS:

    SCHEMATHESIS_HOOKS=tests.schemathesis_hooks schemathesis run http://127.0.0.1:8000/openapi.json --checks all

Without it schemathesis sends random bytes as "images", which the service rightly refuses (415).
"""

import io

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image


def encoded_images(fmt: str) -> st.SearchStrategy[bytes]:
    """Small RGB, grey or RGBA images of random size and pixels, encoded as ``fmt``."""

    @st.composite
    def images(draw):
        width, height = draw(st.integers(8, 96)), draw(st.integers(8, 96))
        mode = draw(st.sampled_from(["RGB", "L"] if fmt == "JPEG" else ["RGB", "L", "RGBA"]))
        seed = draw(st.integers(0, 2**32 - 1))
        channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
        pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(buf, fmt)
        return buf.getvalue()

    return images()


schemathesis.openapi.media_type("image/jpeg", encoded_images("JPEG"))
schemathesis.openapi.media_type("image/png", encoded_images("PNG"))
