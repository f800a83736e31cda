"""Extract, validate and preprocess: clear errors on bad data, nothing half-written."""

import io
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import FULLRES, SAMPLE, need
from skinlesion.data.preprocess import DataValidationError, load_square, preprocess, read_index

PARTS = [SAMPLE / "HAM10000_images_part_1.zip", SAMPLE / "HAM10000_images_part_2.zip"]
META = SAMPLE / "HAM10000_metadata.csv"


def run(tmp_path, zips=PARTS, meta=META, **kwargs):
    out = tmp_path / "out"
    kwargs.setdefault("image_size", 32)
    index = preprocess(zips, meta, out / "images.npy", out / "index.csv", out / "skipped.csv", progress=False, **kwargs)
    return index, out


def rewrite_zip(src, dest, edit):
    """Copy a zip, passing each (name, bytes) through ``edit`` (None drops the member)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for name in zin.namelist():
            data = edit(name, zin.read(name))
            if data is not None:
                zout.writestr(name, data)
    return dest


def test_cache_matches_metadata(tmp_path):
    index, out = run(tmp_path, threads=2)
    images = np.load(out / "images.npy", mmap_mode="r")
    meta = pd.read_csv(META)
    assert images.shape == (len(meta), 32, 32, 3) and images.dtype == np.uint8
    assert list(index["image_id"]) == sorted(meta["image_id"])
    assert (read_index(out / "index.csv")["row"] == np.arange(len(meta))).all()
    # Row i of the cache is image i of the index, decoded by the same function.
    row = 17
    with zipfile.ZipFile(SAMPLE / index.loc[row, "source"]) as zf:
        expected = load_square(zf.read(f"{index.loc[row, 'image_id']}.jpg"), 32)
    np.testing.assert_array_equal(images[row], expected)
    assert pd.read_csv(out / "skipped.csv").empty


def test_metadata_with_dataset_column_gives_the_same_cache(tmp_path):
    meta = pd.read_csv(META)
    meta["dataset"] = "vidir_modern"
    newer = tmp_path / "meta_with_dataset.csv"
    meta.to_csv(newer, index=False)
    index, out = run(tmp_path / "a", meta=newer)
    _, out_plain = run(tmp_path / "b")
    assert "dataset" in index.columns
    np.testing.assert_array_equal(np.load(out / "images.npy"), np.load(out_plain / "images.npy"))


def corrupt_first_jpeg(tmp_path):
    victim = []

    def edit(name, data):
        if not victim:
            victim.append(name.removesuffix(".jpg"))
            return data[:300]  # a truncated JPEG
        return data

    bad = rewrite_zip(PARTS[0], tmp_path / PARTS[0].name, edit)
    return bad, victim[0]


def test_corrupt_jpeg_fails_naming_the_image_and_writes_nothing(tmp_path):
    bad, victim = corrupt_first_jpeg(tmp_path)
    with pytest.raises(DataValidationError, match=rf"{victim} \(.*{PARTS[0].name}:{victim}.jpg\): cannot decode"):
        run(tmp_path, zips=[bad, PARTS[1]])
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_corrupt_jpeg_can_be_skipped_and_listed(tmp_path):
    bad, victim = corrupt_first_jpeg(tmp_path)
    index, out = run(tmp_path, zips=[bad, PARTS[1]], on_bad_image="skip")
    assert victim not in set(index["image_id"])
    skipped = pd.read_csv(out / "skipped.csv")
    assert list(skipped["image_id"]) == [victim] and "cannot decode" in skipped["reason"][0]
    assert np.load(out / "images.npy", mmap_mode="r").shape[0] == len(pd.read_csv(META)) - 1


def test_truncated_zip_fails_clearly_and_writes_nothing(tmp_path):
    truncated = tmp_path / PARTS[0].name
    truncated.write_bytes(PARTS[0].read_bytes()[: PARTS[0].stat().st_size // 2])
    with pytest.raises(DataValidationError, match=rf"{truncated.name}: not a readable zip archive"):
        run(tmp_path, zips=[truncated, PARTS[1]])
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_missing_and_unlisted_images(tmp_path):
    dropped = []

    def edit(name, data):
        if not dropped:
            dropped.append(name.removesuffix(".jpg"))
            return None
        return data

    zips = [rewrite_zip(PARTS[0], tmp_path / PARTS[0].name, edit), PARTS[1]]
    with pytest.raises(DataValidationError, match=f"{dropped[0]}.*metadata row has no image"):
        run(tmp_path, zips=zips)
    meta = pd.read_csv(META)
    short = tmp_path / "short.csv"
    meta[meta["image_id"] != "ISIC_0024306"].iloc[1:].to_csv(short, index=False)
    with pytest.raises(DataValidationError, match="image has no metadata row"):
        run(tmp_path, meta=short)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.drop(columns=["dx"]), "missing column\\(s\\) dx"),
        (lambda m: m.assign(dx=m["dx"].where(m.index != 3, "melanoma")), "unknown dx \\['melanoma'\\] on row\\(s\\) 5"),
        (lambda m: pd.concat([m, m.iloc[:1]]), "image_id repeated"),
    ],
)
def test_bad_metadata_names_file_and_field(tmp_path, edit, message):
    bad = tmp_path / "meta.csv"
    edit(pd.read_csv(META)).to_csv(bad, index=False)
    with pytest.raises(DataValidationError, match=message):
        run(tmp_path, meta=bad)


def test_full_frames_and_downscaled_copies_get_the_same_framing(mirror):
    """A 600x450 original and its 200x150 re-encoding give nearly the same cached image."""
    fullres = need(FULLRES)
    meta = pd.read_csv(fullres / "metadata.csv")
    diffs = []
    with (
        zipfile.ZipFile(mirror / "HAM10000_images_part_1.zip") as z1,
        zipfile.ZipFile(mirror / "HAM10000_images_part_2.zip") as z2,
    ):
        names = set(z1.namelist())
        for image_id in meta["image_id"][:20]:
            small = (z1 if f"{image_id}.jpg" in names else z2).read(f"{image_id}.jpg")
            big = load_square(fullres / f"{image_id}.jpg", 64).astype(float)
            assert Image.open(fullres / f"{image_id}.jpg").size == (600, 450)
            diffs.append(np.abs(big - load_square(small, 64)).mean())
    assert np.median(diffs) < 4.0  # out of 255: the same crop; a shifted crop differs by far more


def test_square_input_is_only_resized():
    rng = np.random.default_rng(0)
    frame = Image.fromarray(rng.integers(0, 255, (150, 200, 3), dtype=np.uint8))
    square = frame.crop((25, 0, 175, 150))
    np.testing.assert_array_equal(load_square(frame, 150), np.asarray(square))
    buf = io.BytesIO()
    frame.save(buf, format="PNG")
    np.testing.assert_array_equal(load_square(buf.getvalue(), 150), np.asarray(square))


def test_the_cache_and_the_service_see_the_same_pixels_of_full_size_jpegs(tmp_path):
    """The 150 full-size 600x450 HAM10000 JPEGs: the cache built from a zip of them (the preprocess rule)
    and the service's decode of the same bytes give byte-identical arrays, at the default cache size."""
    from skinlesion.serve.inference import MAX_PIXELS, decode

    fullres = need(FULLRES)
    meta = pd.read_csv(fullres / "metadata.csv")
    archive = tmp_path / "HAM10000_images_part_1.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for image_id in meta["image_id"]:
            zf.write(fullres / f"{image_id}.jpg", f"{image_id}.jpg")
    index, out = run(tmp_path, zips=[archive], meta=fullres / "metadata.csv", image_size=128)
    cache = np.load(out / "images.npy")
    assert len(index) == len(meta) == 150
    for row, image_id in zip(index["row"], index["image_id"], strict=True):
        data = (fullres / f"{image_id}.jpg").read_bytes()
        served = decode(f"{image_id}.jpg", data, size=128, max_pixels=MAX_PIXELS)
        assert np.array_equal(cache[row], served), image_id
