"""Twenty-two kinds of bad input, through the CLI as a user meets them. Each is handled
correctly or is a clear error: exit code 2, one line naming the file and what is wrong, no
traceback. A bad file among many in `predict` is reported and skipped, never stops the run."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adformer.cli import main

# ------------------------------------------------------------------ image files


def _png(path: Path, size=(40, 30)) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def truncated(folder: Path) -> Path:
    data = _png(folder / "truncated.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    return folder / "truncated.png"


def zero_bytes(folder: Path) -> Path:
    (folder / "empty.png").write_bytes(b"")
    return folder / "empty.png"


def text_as_png(folder: Path) -> Path:
    (folder / "notes.png").write_text("not an image")
    return folder / "notes.png"


def bomb(folder: Path) -> Path:
    """A valid PNG whose header claims 30,000 × 30,000 pixels."""
    data = bytearray(_png(folder / "bomb.png", (1, 1)).read_bytes())
    data[16:24] = struct.pack(">II", 30_000, 30_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    (folder / "bomb.png").write_bytes(bytes(data))
    return folder / "bomb.png"


def png_16_bit(folder: Path) -> Path:
    ramp = np.linspace(0, 65535, 40 * 30, dtype=np.uint16).reshape(30, 40)
    Image.fromarray(ramp).save(folder / "deep.png")
    return folder / "deep.png"


def tiff_16_bit(folder: Path) -> Path:
    ramp = np.linspace(0, 65535, 40 * 30, dtype=np.uint16).reshape(30, 40)
    Image.fromarray(ramp).save(folder / "deep.tif")
    return folder / "deep.tif"


def cmyk_jpeg(folder: Path) -> Path:
    Image.new("CMYK", (40, 30), (0, 120, 200, 10)).save(folder / "print.jpg")
    return folder / "print.jpg"


def rgba(folder: Path) -> Path:
    Image.new("RGBA", (40, 30), (10, 200, 30, 128)).save(folder / "alpha.png")
    return folder / "alpha.png"


def palette(folder: Path) -> Path:
    Image.open(_png(folder / "palette.png")).convert("P").save(folder / "palette.png")
    return folder / "palette.png"


def one_pixel(folder: Path) -> Path:
    return _png(folder / "pixel.png", (1, 1))


def exif_rotated(folder: Path) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.new("RGB", (40, 20), (200, 10, 10)).save(folder / "phone.jpg", exif=exif)
    return folder / "phone.jpg"


def not_utf8_name(folder: Path) -> Path:
    raw = os.fsencode(folder) + b"/caf\xe9.png"  # Latin-1 bytes: not valid UTF-8
    with open(raw, "wb") as handle:
        handle.write(_png(folder / "tmp.png").read_bytes())
    (folder / "tmp.png").unlink()
    return Path(os.fsdecode(raw))


SKIPPED = [truncated, zero_bytes, text_as_png, bomb]
SCORED = [png_16_bit, tiff_16_bit, cmyk_jpeg, rgba, palette, one_pixel, exif_rotated, not_utf8_name]


def _clear_error(capsys, *names: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("adformer: error: "), err
    assert len(err.strip().splitlines()) == 1 or "mismatched masks" in err, err
    for name in names:
        assert name in err, err
    return err


@pytest.mark.parametrize("make", SKIPPED + SCORED, ids=lambda f: f.__name__)
def test_predict_scores_what_it_can_and_names_what_it_skips(make, fitted_uniad, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    good = _png(folder / "good.png")
    odd = make(folder)
    assert main(["predict", str(fitted_uniad[1]), str(folder), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    with open(tmp_path / "o" / "scores.csv", newline="", errors="surrogateescape") as handle:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(handle)}
    assert good.name in rows and "Traceback" not in err
    if make in SKIPPED:
        assert odd.name not in rows and f"skipped unreadable image: {odd}" in err
        return
    assert odd.name in rows and np.isfinite(float(rows[odd.name]["score"]))
    overlay = Image.open(tmp_path / "o" / rows[odd.name]["overlay"])
    if make is exif_rotated:  # upright, as a viewer shows it
        assert overlay.size == (20, 40)


@pytest.mark.parametrize("make", SKIPPED, ids=lambda f: f.__name__)
def test_fit_names_an_unreadable_training_image(make, synthetic_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "dots", root / "dots")
    bad = make(root / "dots" / "train" / "good")
    args = ["fit", "--method", "uniad", "--data", str(root), "--out", str(tmp_path / "run")]
    assert main([*args, "--preset", "tiny"]) == 2
    _clear_error(capsys, bad.name)


# ------------------------------------------------------------------ data folders


@pytest.fixture
def root(synthetic_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "dots", root / "dots")
    return root


def _test(run, root, capsys):
    json_out = str(root.parent / "m.json")
    return main(["test", str(run), "--data", str(root), "--category", "dots", "--json", json_out])


def test_mask_of_another_size(fitted_uniad, root, capsys):
    mask = sorted((root / "dots" / "ground_truth").rglob("*.png"))[0]
    Image.new("L", (17, 23), 255).save(mask)
    assert _test(fitted_uniad[1], root, capsys) == 2
    _clear_error(capsys, mask.name, "17, 23")


def test_mask_values_other_than_0_255_are_defect_where_nonzero(fitted_uniad, root, capsys):
    for mask in (root / "dots" / "ground_truth").rglob("*.png"):
        values = np.asarray(Image.open(mask))
        Image.fromarray(np.where(values > 0, 1, 0).astype(np.uint8)).save(mask)  # VisA-like 0/1
    assert _test(fitted_uniad[1], root, capsys) == 0
    metrics = json.loads((root.parent / "m.json").read_text())
    assert metrics["pixel_auroc"] > 0.5  # the 1s were read as defects


def test_mask_with_no_image(fitted_uniad, root, capsys):
    mask = sorted((root / "dots" / "ground_truth").rglob("*.png"))[0]
    stray = mask.with_name("999_mask.png")
    shutil.copy(mask, stray)
    assert _test(fitted_uniad[1], root, capsys) == 2
    _clear_error(capsys, stray.name, "matches no image")


def test_category_without_good_images(root, tmp_path, capsys):
    for image in (root / "dots" / "train" / "good").iterdir():
        image.unlink()
    args = ["fit", "--method", "uniad", "--data", str(root), "--out", str(tmp_path / "run")]
    assert main([*args, "--preset", "tiny"]) == 2
    _clear_error(capsys, "dots", "no images")


def test_symlink_loop_in_the_data_root(fitted_uniad, root, tmp_path, capsys):
    (root / "dots" / "test" / "good" / "loop").symlink_to(root / "dots" / "test")
    out = tmp_path / "o"
    assert (
        main(["predict", str(fitted_uniad[1]), str(root / "dots" / "test"), "--out", str(out)]) == 0
    )
    assert _test(fitted_uniad[1], root, capsys) == 0  # the loop is not followed


# ------------------------------------------------------------------ bundles and options


@pytest.fixture
def bundle(fitted_uniad, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(fitted_uniad[1], copy, ignore=shutil.ignore_patterns("checkpoint*"))
    return copy


def _predict(bundle, root):
    return main(
        ["predict", str(bundle), str(root / "dots" / "test"), "--out", str(bundle.parent / "o")]
    )


def test_config_with_a_wrong_typed_field(bundle, root, capsys):
    meta = json.loads((bundle / "config.json").read_text())
    meta["config"]["image_size"] = "large"
    (bundle / "config.json").write_text(json.dumps(meta))
    assert _predict(bundle, root) == 2
    _clear_error(capsys, "config.json", "image_size")


def test_tampered_safetensors_header(bundle, root, capsys):
    data = bytearray((bundle / "model.safetensors").read_bytes())
    data[8:16] = b"{garbage"
    (bundle / "model.safetensors").write_bytes(bytes(data))
    assert _predict(bundle, root) == 2
    _clear_error(capsys, "model.safetensors")


def test_bundle_from_a_future_format(bundle, root, capsys):
    meta = json.loads((bundle / "config.json").read_text())
    meta["format_version"] = 99
    (bundle / "config.json").write_text(json.dumps(meta))
    assert _predict(bundle, root) == 2
    _clear_error(capsys, "format 99")


@pytest.mark.parametrize(
    "option, message",
    [("no_such_key=1", "unknown option"), ("epochs=ten", "epochs"), ("lr=[1]", "lr")],
)
def test_set_with_an_unknown_key_or_a_bad_value(option, message, root, tmp_path, capsys):
    args = ["fit", "--method", "uniad", "--data", str(root), "--out", str(tmp_path / "run")]
    assert main([*args, "--preset", "tiny", "--set", option]) == 2
    _clear_error(capsys, message)
    assert not (tmp_path / "run").exists()  # refused before any work


def test_a_full_disk_during_save_loses_nothing(fitted_uniad, tmp_path, monkeypatch, capsys):
    import safetensors.torch

    detector, run = fitted_uniad
    target = tmp_path / "bundle"
    detector.save(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    from adformer.errors import AdformerError

    with pytest.raises(AdformerError, match="No space left on device"):
        detector.save(target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
