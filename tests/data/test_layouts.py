"""VisA, BTAD and plain-folder layouts, each read from a small tree generated in that exact
layout with its oddities (VisA's 0/1 mask values and CSV, BTAD's .bmp images and .png masks),
and layout detection."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from adformer.cli import main
from adformer.data import load_root
from adformer.data.images import read_mask
from adformer.data.layouts import detect_layout
from adformer.data.synthetic import synthetic_benchmark
from adformer.errors import AdformerError


def _image(path, size=(32, 24), value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.random.default_rng(value).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(array).save(path)
    return path


def _mask(path, size=(32, 24), on=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((size[1], size[0]), np.uint8)
    mask[4:10, 5:12] = on
    Image.fromarray(mask).save(path)
    return path


@pytest.fixture
def visa(tmp_path):
    root = tmp_path / "visa"
    rows = []
    for obj in ("candle", "pcb1"):
        for i in range(4):
            rel = f"{obj}/Data/Images/Normal/{i:03d}.JPG"
            _image(root / rel, value=i)
            rows.append([obj, "train" if i < 3 else "test", "normal", rel, ""])
        rel, mask = f"{obj}/Data/Images/Anomaly/100.JPG", f"{obj}/Data/Masks/Anomaly/100.png"
        _image(root / rel, value=9)
        _mask(root / mask, on=1)  # VisA's masks: 0 and 1, not 0 and 255
        rows.append([obj, "test", "anomaly", rel, mask])
    (root / "split_csv").mkdir()
    with open(root / "split_csv" / "1cls.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["object", "split", "label", "image", "mask"], *rows])
    return root


def test_visa(visa):
    assert detect_layout(visa) == "visa"
    (candle,) = load_root(visa, ["candle"])
    assert len(candle.train) == 3 and [s.label for s in candle.test] == [0, 1]
    assert candle.has_masks and read_mask(candle.test[1].mask_path).sum() == 6 * 7
    assert [c.name for c in load_root(visa, layout="visa")] == ["candle", "pcb1"]
    with pytest.raises(AdformerError, match="screw"):
        load_root(visa, ["screw"])


def test_visa_missing_file_is_named(visa):
    (visa / "candle/Data/Masks/Anomaly/100.png").unlink()
    with pytest.raises(AdformerError, match="100.png, which does not exist"):
        load_root(visa, ["candle"])


@pytest.fixture
def btad(tmp_path):
    root = tmp_path / "btad"
    for product in ("01", "03"):
        for i in range(3):
            _image(root / product / "train" / "ok" / f"{i:03d}.bmp", value=i)
        _image(root / product / "test" / "ok" / "000.bmp")
        _image(root / product / "test" / "ko" / "000.bmp", value=5)
        _mask(root / product / "ground_truth" / "ko" / "000.png", on=255)
    return root


def test_btad(btad):
    assert detect_layout(btad) == "btad"
    first, third = load_root(btad)
    assert (first.name, len(first.train), [s.label for s in first.test]) == ("01", 3, [0, 1])
    assert first.test[1].mask_path.suffix == ".png" and first.test[1].path.suffix == ".bmp"
    (btad / "03" / "ground_truth" / "ko" / "000.png").unlink()
    with pytest.raises(AdformerError, match="no mask for .*000.bmp"):
        load_root(btad, ["03"])


def test_plain_folder_holds_out_good_images_for_testing(tmp_path):
    root = tmp_path / "bolts"
    for i in range(10):
        _image(root / "good" / f"g{i}.png", value=i)
    for i in range(2):
        _image(root / "bad" / f"b{i}.png", value=20 + i)
        _mask(root / "masks" / f"b{i}.png", on=255)
    assert detect_layout(root) == "folder"
    (category,) = load_root(root)
    train, test = {s.path for s in category.train}, {s.path for s in category.test}
    assert category.name == "bolts" and len(train) == 8 and not train & test
    assert sorted(s.label for s in category.test) == [0, 0, 1, 1] and category.has_masks
    (again,) = load_root(root)  # the same held-out images on every call (fit, then test)
    assert {s.path for s in again.test} == test
    _mask(root / "masks" / "b0.png", size=(10, 10), on=255)
    with pytest.raises(AdformerError, match="b0.png is"):
        load_root(root)


def test_ambiguous_root_asks_for_a_layout(tmp_path, visa):
    _image(visa / "good" / "a.png")
    _image(visa / "bad" / "b.png")
    with pytest.raises(AdformerError, match="--layout"):
        load_root(visa)
    assert len(load_root(visa, layout="visa")) == 2


def test_fit_and_test_a_plain_folder_from_the_cli(tmp_path):
    root = tmp_path / "bolts"
    for i in range(10):
        _image(root / "good" / f"g{i}.png", value=i)
    _image(root / "bad" / "b0.png", value=30)
    run, out = tmp_path / "run", tmp_path / "m.json"
    fit = ["fit", "--method", "uniad", "--data", str(root), "--layout", "folder"]
    assert main([*fit, "--preset", "tiny", "--out", str(run)]) == 0
    assert main(["test", str(run), "--data", str(root), "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["per_category"]["bolts"]["n_good"] == 2  # the held-out share of good/


def test_synthetic_benchmark_is_generated_once_and_fixed(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = load_root("synthetic", ["checker"])[0]
    assert len(first.train) == 60 and sum(s.label for s in first.test) == 20 and first.has_masks
    stamp = first.train[0].path.stat().st_mtime_ns
    again = load_root("synthetic", ["checker"])[0]  # cached: not written again
    assert again.train[0].path.stat().st_mtime_ns == stamp
    elsewhere = synthetic_benchmark(tmp_path / "other")  # the same bytes, wherever generated
    for sample in (first.train[0], first.test[-1]):
        twin = elsewhere / sample.path.relative_to(sample.path.parents[3])
        assert twin.read_bytes() == sample.path.read_bytes()


def test_synthetic_benchmark_generated_by_parallel_processes_is_whole(tmp_path):
    # each process reads every image as soon as its call returns, while the others may still
    # be generating: none may see a half-written file, and one whole copy is left
    script = (
        "import sys; from PIL import Image; from adformer.data.synthetic import synthetic_benchmark"
        "\nfor p in sorted(synthetic_benchmark(sys.argv[1]).rglob('*.png')): Image.open(p).load()"
    )
    runs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)]) for _ in range(3)]
    assert [run.wait() for run in runs] == [0, 0, 0]
    root = tmp_path / "synthetic-v1"
    assert (root / ".complete").is_file() and [p.name for p in tmp_path.iterdir()] == [root.name]
    assert len(list(root.rglob("*.png"))) == 3 * (60 + 20 + 20 + 20)  # train, test, masks
