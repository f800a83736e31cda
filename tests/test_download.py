"""The download path, for real over HTTP against a Dataverse-like server on 127.0.0.1."""

import hashlib

import pytest
import yaml

from conftest import SAMPLE, run_snakemake
from dataverse_server import DataverseServer
from skinlesion.config import FileSpec
from skinlesion.data.checksum import ChecksumError
from skinlesion.data.download import DownloadError, copy_from_mirror, fetch_dataverse

ZIP = SAMPLE / "HAM10000_images_part_1.zip"
META = SAMPLE / "HAM10000_metadata.csv"
IDS = {3172585: ZIP, 3172584: SAMPLE / "HAM10000_images_part_2.zip", 4338392: META}


def spec_for(file_id: int, **overrides) -> FileSpec:
    path = IDS[file_id]
    fields = {
        "name": path.name,
        "id": file_id,
        "size": path.stat().st_size,
        "md5": hashlib.md5(path.read_bytes()).hexdigest(),
    }
    return FileSpec(**{**fields, **overrides})


@pytest.fixture
def server():
    with DataverseServer(IDS) as srv:
        yield srv


def fetch(server, spec, dest, **kwargs):
    return fetch_dataverse(spec, dest, base_url=server.url, backoff_s=0.01, progress=False, **kwargs)


def test_downloads_and_verifies(server, tmp_path):
    dest = fetch(server, spec_for(4338392, original=True), tmp_path / "HAM10000_metadata.csv")
    assert dest.read_bytes() == META.read_bytes()
    assert server.requests[0]["path"].endswith("/api/access/datafile/4338392?format=original")
    assert not list(tmp_path.glob("*.part"))


def test_cut_off_transfer_resumes_with_range(server, tmp_path):
    server.cut_after = [100_000, 250_000]
    # Whole chunks reach the disk, so with 10 kB chunks the cuts land on chunk boundaries.
    dest = fetch(server, spec_for(3172585), tmp_path / ZIP.name, chunk_size=10_000)
    assert dest.read_bytes() == ZIP.read_bytes()
    assert [r["range"] for r in server.requests] == [None, "bytes=100000-", "bytes=350000-"]


def test_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    (tmp_path / (ZIP.name + ".part")).write_bytes(ZIP.read_bytes()[:123_456])
    dest = fetch(server, spec_for(3172585), tmp_path / ZIP.name)
    assert dest.read_bytes() == ZIP.read_bytes()
    assert [r["range"] for r in server.requests] == ["bytes=123456-"]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.ignore_range = True
    (tmp_path / (ZIP.name + ".part")).write_bytes(b"x" * 5000)
    dest = fetch(server, spec_for(3172585), tmp_path / ZIP.name)
    assert dest.read_bytes() == ZIP.read_bytes()


def test_wrong_md5_fails_and_leaves_nothing(server, tmp_path):
    wrong = "0" * 32
    with pytest.raises(ChecksumError) as err:
        fetch(server, spec_for(3172585, md5=wrong), tmp_path / ZIP.name)
    actual = hashlib.md5(ZIP.read_bytes()).hexdigest()
    assert ZIP.name in str(err.value) and wrong in str(err.value) and actual in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_gives_up_after_retries_and_keeps_the_partial_file(server, tmp_path):
    server.cut_after = [1000, 1000, 1000]
    with pytest.raises(DownloadError, match="giving up after 3 attempts"):
        fetch(server, spec_for(3172585), tmp_path / ZIP.name, retries=2, chunk_size=500)
    assert not (tmp_path / ZIP.name).exists()
    assert (tmp_path / (ZIP.name + ".part")).stat().st_size == 3000


def test_http_404_is_reported(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(server, FileSpec(name="nope.zip", id=999), tmp_path / "nope.zip", retries=0)


def test_mirror_copy_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="HAM10000_images_part_1.zip: not found in the mirror directory"):
        copy_from_mirror(FileSpec(name=ZIP.name), tmp_path, tmp_path / "out.zip")


def test_workflow_downloads_from_dataverse_api(server, tmp_path):
    """The download and checksum rules, run by Snakemake against the local Dataverse server."""
    files = {}
    for file_id in IDS:
        spec = spec_for(file_id, original=file_id == 4338392)
        files[spec.name] = {"id": spec.id, "size": spec.size, "md5": spec.md5, "original": spec.original}
    cfg = tmp_path / "dataverse.yaml"
    cfg.write_text(yaml.safe_dump({"files": files, "dataverse": {"base_url": server.url, "backoff_s": 0.01}}))
    server.cut_after = [50_000]
    run_snakemake(tmp_path, "--configfile", str(cfg), "--", "results/data/checksums.csv")
    table = (tmp_path / "results" / "data" / "checksums.csv").read_text().splitlines()
    assert len(table) == 4 and all(line.endswith(",ok") for line in table[1:])
    for path in IDS.values():
        assert (tmp_path / "results" / "raw" / path.name).read_bytes() == path.read_bytes()
