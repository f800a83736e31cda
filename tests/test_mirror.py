"""`skinlesion mirror`: the downscaled mirror rebuilt from 600x450 originals, reproducibly."""

import contextlib
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from conftest import FULLRES, MIRROR, ROOT, need
from skinlesion.config import data_files, load_config
from skinlesion.data.mirror import METADATA, PARTS, SUMS, ZIP_TIMESTAMP, MirrorError, make_mirror, write_zip
from skinlesion.io import read_md5sums

FILES = {*PARTS, METADATA, SUMS}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def make_originals(dest: Path, parts: tuple[str, ...] = PARTS) -> dict[str, list[str]]:
    """A tiny 'Dataverse original' folder: 100 + 50 of the 600x450 images at the zip roots."""
    source = need(FULLRES)
    images = sorted(source.glob("ISIC_*.jpg"))
    assert len(images) == 150
    split = {PARTS[0]: images[:100], PARTS[1]: images[100:]}
    dest.mkdir(parents=True, exist_ok=True)
    names = {}
    for part in parts:
        # Part 1 deflated and in reverse order, part 2 stored: the mirror must not depend on either.
        method, order = (zipfile.ZIP_DEFLATED, reversed) if part == PARTS[0] else (zipfile.ZIP_STORED, list)
        with zipfile.ZipFile(dest / part, "w", compression=method) as zf:
            for path in order(split[part]):
                zf.write(path, path.name)
        names[part] = sorted(p.name for p in split[part])
    (dest / METADATA).write_bytes((source / "metadata.csv").read_bytes())
    return names


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The originals, two make_mirror runs and one CLI run."""
    root = tmp_path_factory.mktemp("mirror")
    names = make_originals(root / "originals")
    sums = [make_mirror(root / "originals", root / f"run{i}") for i in (1, 2)]
    cli = subprocess.run(
        [sys.executable, "-m", "skinlesion", "mirror", "--source", str(root / "originals"), "--out", str(root / "cli")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    return {"root": root, "names": names, "sums": sums, "cli_stdout": cli.stdout}


def test_mirror_has_the_layout_and_200x150_jpegs(built):
    root = built["root"]
    out = root / "run1"
    assert {p.name for p in out.iterdir()} == FILES
    for part in PARTS:
        with zipfile.ZipFile(out / part) as zf:
            infos = zf.infolist()
            assert [i.filename for i in infos] == built["names"][part]  # same names, sorted, at the root
            for info in infos:
                assert info.compress_type == zipfile.ZIP_STORED and info.date_time == ZIP_TIMESTAMP
                with Image.open(io.BytesIO(zf.read(info))) as im:
                    assert (im.format, im.size, im.mode) == ("JPEG", (200, 150), "RGB"), info.filename
                    assert JpegImagePlugin.get_sampling(im) == 2  # 4:2:0
    assert (out / METADATA).read_bytes() == (root / "originals" / METADATA).read_bytes()


def test_md5sums_match_the_files_and_the_workflow_reads_them(built):
    out = built["root"] / "run1"
    sums = read_md5sums(out / SUMS)
    assert sums == {name: md5(out / name) for name in (*PARTS, METADATA)}
    assert sums == built["sums"][0]
    assert (out / SUMS).read_text() == "".join(f"{sums[n]}  {n}\n" for n in (*PARTS, METADATA))
    specs = data_files(load_config(overrides={"data_dir": str(out)}))
    assert {name: spec.md5 for name, spec in specs.items()} == sums
    for part in PARTS:
        assert f"{sums[part]}  {built['root'] / 'cli' / part}" in built["cli_stdout"]


def test_mirror_is_byte_identical_across_runs_and_the_cli(built):
    root = built["root"]
    assert built["sums"][0] == built["sums"][1]
    for name in FILES:
        data = (root / "run1" / name).read_bytes()
        assert (root / "run2" / name).read_bytes() == data, name
        assert (root / "cli" / name).read_bytes() == data, name


def test_missing_zip_is_named_and_nothing_is_written(tmp_path):
    make_originals(tmp_path / "originals", parts=PARTS[:1])
    with pytest.raises(MirrorError, match=PARTS[1]):
        make_mirror(tmp_path / "originals", tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_bad_image_stops_the_run_before_md5sums(tmp_path):
    make_originals(tmp_path / "originals")
    with zipfile.ZipFile(tmp_path / "originals" / PARTS[1], "a") as zf:
        zf.writestr("ISIC_9999999.jpg", b"not a jpeg")
    with pytest.raises(MirrorError, match="ISIC_9999999.jpg"):
        make_mirror(tmp_path / "originals", tmp_path / "out")
    # Part 1 was complete and stays; no half-written part 2, no temporary file, no MD5SUMS.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [PARTS[0]]


def test_rebuild_against_the_shared_mirror(built):
    """The zip container reproduces the shared mirror exactly; the JPEGs only approximately."""
    mirror = need(MIRROR)
    published = read_md5sums(mirror / SUMS)
    # The shared mirror's own JPEG bytes through the mirror's zip writer give its published MD5s.
    for part in PARTS:
        with zipfile.ZipFile(mirror / part) as zf:
            members = [(info.filename, zf.read(info)) for info in zf.infolist()]
        assert [name for name, _ in members] == sorted(name for name, _ in members)
        write_zip(built["root"] / part, members)
        assert md5(built["root"] / part) == published[part], part

    # The 150 originals are images of the shared mirror (all in its part 1): same size, subsampling and
    # luma table (quality 75), pixels close but not equal. Its chroma table's DC entry is 8, where
    # quality 75 gives 9; everything else in both tables is the standard quality-75 table.
    ours = built["root"] / "run1"
    diffs = []
    with contextlib.ExitStack() as stack:
        shared = [stack.enter_context(zipfile.ZipFile(mirror / part)) for part in PARTS]
        holder = {name: zf for zf in shared for name in zf.namelist()}
        for part in PARTS:
            mine = stack.enter_context(zipfile.ZipFile(ours / part))
            for name in mine.namelist():
                a, b = (Image.open(io.BytesIO(zf.read(name))) for zf in (mine, holder[name]))
                assert a.size == b.size and a.quantization[0] == b.quantization[0], name  # luma table: quality 75
                assert JpegImagePlugin.get_sampling(a) == JpegImagePlugin.get_sampling(b)
                diffs.append(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())
    assert len(diffs) == 150
    print(f"mean absolute pixel difference from the shared mirror: {np.mean(diffs):.2f} (max {np.max(diffs):.2f})")
    assert np.mean(diffs) < 3.0 and np.max(diffs) < 12
