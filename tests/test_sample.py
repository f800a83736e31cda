"""The bundled sample: small, real, lesion-complete, attributed, and reproducible from the mirror."""

import hashlib

import pandas as pd

from conftest import SAMPLE
from skinlesion import CLASSES
from skinlesion.data.sample import make_sample
from skinlesion.io import read_md5sums


def test_sample_is_small_attributed_and_checksummed():
    total = sum(p.stat().st_size for p in SAMPLE.iterdir())
    assert 1_000_000 < total < 2_000_000
    readme = (SAMPLE / "README.md").read_text()
    assert "CC BY-NC 4.0" in readme and "10.7910/DVN/DBW86T" in readme and "Tschandl" in readme
    for name, md5 in read_md5sums(SAMPLE / "MD5SUMS").items():
        assert hashlib.md5((SAMPLE / name).read_bytes()).hexdigest() == md5, name


def test_sample_has_every_class_and_whole_lesions(mirror):
    sample = pd.read_csv(SAMPLE / "HAM10000_metadata.csv")
    assert set(sample["dx"]) == set(CLASSES)
    full = pd.read_csv(mirror / "HAM10000_metadata.csv")
    of_sampled_lesions = full[full["lesion_id"].isin(sample["lesion_id"])]
    assert sorted(of_sampled_lesions["image_id"]) == sorted(sample["image_id"])


def test_sample_rebuilds_byte_identically(mirror, tmp_path):
    make_sample(mirror, tmp_path, lesions_per_class=30, seed=0)
    for path in SAMPLE.iterdir():
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
