"""Locust user for the inference service: each request posts one real dermatoscopic JPEG to /predict.

Run through ``benchmarks/load_test.py`` (which starts the service), or by hand against a running one:
    locust -f benchmarks/locustfile.py --headless -u 8 -r 8 -t 60s --host http://127.0.0.1:8000
Images: the 600x450 JPEGs in $LOAD_TEST_IMAGES (default ../shared/data/ham10000_fullres_sample).
"""

import os
import random
from pathlib import Path

from locust import HttpUser, constant, task

ROOT = Path(__file__).resolve().parents[1]
IMAGES = Path(os.environ.get("LOAD_TEST_IMAGES", ROOT.parent / "shared" / "data" / "ham10000_fullres_sample"))
JPEGS = [(p.name, p.read_bytes()) for p in sorted(IMAGES.glob("*.jpg"))]
if not JPEGS:
    raise SystemExit(f"{IMAGES}: no .jpg images to send (set LOAD_TEST_IMAGES)")


class Uploader(HttpUser):
    wait_time = constant(0)

    @task
    def predict(self):
        name, data = random.choice(JPEGS)
        with self.client.post("/predict", files={"files": (name, data, "image/jpeg")}, catch_response=True) as r:
            if r.status_code != 200 or r.json()["predictions"][0]["file"] != name:
                r.failure(f"HTTP {r.status_code}: {r.text[:200]}")
