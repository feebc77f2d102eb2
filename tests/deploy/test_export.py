"""`adformer export` and the torch-free runtime: the sidecar, thresholds that stay settings,
checksums, per-category runs, and a runtime that works with torch blocked."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import adformer
from adformer.cli import main
from adformer.deploy import export
from adformer.deploy.export import SIDECAR, export_onnx
from adformer.errors import AdformerError
from adformer.runtime import load


@pytest.fixture
def traces(monkeypatch) -> list:
    """Every `_trace` call of an export, in order (each still traces)."""
    calls, trace = [], export._trace
    monkeypatch.setattr(export, "_trace", lambda *args: calls.append(args) or trace(*args))
    return calls


def _test_images(root, category="grating"):
    return sorted((root / category / "test").rglob("*.png"))


def test_sidecar_says_what_is_not_weights(fitted_uniad, uniad_export):
    detector, run = fitted_uniad
    meta = json.loads((uniad_export / SIDECAR).read_text())
    assert meta["method"] == "uniad" and meta["image_size"] == detector.config.image_size
    assert meta["adformer_version"] == adformer.__version__
    assert meta["normalisation"] == detector.normalisation()
    (entry,) = meta["models"]
    assert entry["threshold"] == detector.threshold_ and entry["map_low"] == detector.map_low_
    assert entry["categories"] == detector.categories_
    assert (uniad_export / entry["file"]).is_file()
    assert sorted(p.name for p in uniad_export.iterdir()) == ["adformer-onnx.json", "model.onnx"]
    assert max(entry["checked"].values()) < 1e-4  # checked against PyTorch at export


def test_runtime_without_torch(fitted_uniad, uniad_export, synthetic_root):
    """`adformer.runtime` imports and predicts in a process where torch cannot be imported."""
    files = [str(p) for p in _test_images(synthetic_root)]
    script = (
        "import json, sys\n"
        "sys.modules['torch'] = None\n"  # any `import torch` now raises
        "import adformer.runtime\n"
        "result = adformer.runtime.load(sys.argv[1]).predict(sys.argv[2:])\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(json.dumps({'scores': result.scores.tolist(), 'flags': result.anomalous.tolist(),"
        " 'maps': list(result.maps.shape)}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(uniad_export), *files],
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(out.stdout)
    expected = fitted_uniad[0].predict(files)
    assert np.allclose(found["scores"], expected.scores, rtol=1e-4)
    assert found["flags"] == expected.anomalous.tolist()
    assert found["maps"] == list(expected.maps.shape)


def test_threshold_stays_a_setting(uniad_export, synthetic_root):
    files = _test_images(synthetic_root)
    scores = load(uniad_export).predict(files).scores
    middle = float(np.median(scores))
    loaded = load(uniad_export, threshold=middle).predict(files)
    assert np.array_equal(loaded.anomalous, scores > middle)


def test_runtime_and_detector_take_the_same_inputs(fitted_uniad, uniad_export, synthetic_root):
    files = _test_images(synthetic_root)[:2]
    image = np.zeros((40, 50, 3), np.uint8)
    for model in (fitted_uniad[0], load(uniad_export)):
        assert len(model.predict(files[0]).scores) == 1  # one path, not a list
        assert len(model.predict(image).scores) == 1  # one array
        with pytest.raises(AdformerError, match="not both"):
            model.predict([files[0], image])


def test_a_tampered_graph_is_refused(uniad_export, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(uniad_export, copy)
    with open(copy / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(AdformerError, match="checksum"):
        load(copy)


def test_export_never_overwrites_a_foreign_folder(fitted_uniad, tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(AdformerError, match="not an adformer export"):
        export_onnx(fitted_uniad[1], foreign)
    assert (foreign / "keep.txt").read_text() == "mine"


def test_per_category_run_exports_one_graph_per_category(synthetic_root, tmp_path, traces):
    run = adformer.fit("adtr", synthetic_root, tmp_path / "run", preset="tiny", progress=False)
    out = export_onnx(run, tmp_path / "onnx", threshold=1.5)
    assert len(traces) == 1  # one architecture: traced once, each category's weights put in
    runtime = load(out)
    assert [m.threshold_ for m in runtime.models] == [1.5, 1.5]  # set at export
    assert sorted(m.name for m in runtime.models) == ["dots", "grating"]
    assert sorted(runtime.categories) == ["dots", "grating"]
    files = _test_images(synthetic_root, "dots")
    expected = run.detector("dots").predict(files)
    assert np.allclose(runtime.predict(files, category="dots").scores, expected.scores, rtol=1e-4)
    with pytest.raises(AdformerError, match="one model per category"):
        runtime.model()
    with pytest.raises(AdformerError, match="no model for category 'screws'"):
        runtime.model("screws")


def test_cli_predict_on_the_runtime_and_on_torch(
    fitted_uniad, uniad_export, synthetic_root, tmp_path, capsys
):
    run = fitted_uniad[1]  # uniad_export is `adformer export` of it
    images = str(synthetic_root / "grating" / "test")
    assert main(["predict", str(uniad_export), images, "--out", str(tmp_path / "a")]) == 0
    assert main(["predict", str(run), images, "--out", str(tmp_path / "b")]) == 0
    onnx_rows = (tmp_path / "a" / "scores.csv").read_text().splitlines()
    torch_rows = (tmp_path / "b" / "scores.csv").read_text().splitlines()
    assert len(onnx_rows) == len(torch_rows) > 1
    for a, b in zip(onnx_rows[1:], torch_rows[1:], strict=True):
        (pa, sa, fa, *_), (pb, sb, fb, *_) = a.split(","), b.split(",")
        assert pa == pb and fa == fb and abs(float(sa) - float(sb)) <= 1e-4 * abs(float(sb))
    assert len(list((tmp_path / "a").glob("*_overlay.png"))) == len(onnx_rows) - 1
    capsys.readouterr()
    assert (
        main(["predict", str(run), images, "--out", str(tmp_path / "c"), "--backend", "onnx"]) == 2
    )
    assert "export it first" in capsys.readouterr().err
    assert main(["predict", str(uniad_export), images, "--out", "x", "--backend", "torch"]) == 2
    assert "is an ONNX export" in capsys.readouterr().err


def test_in_place_activations_are_traced_out_of_place_and_restored():
    graph = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU6(inplace=True))
    with pytest.raises(RuntimeError, match="traced"), export._out_of_place(graph):
        assert graph[1].inplace is False  # the exporter's decompositions are far slower in place
        raise RuntimeError("traced")
    assert graph[1].inplace is True  # the detector keeps its own, even after a failed export


@dataclasses.dataclass
class _Config:
    image_size: int = 8


class _Graph(torch.nn.Module):
    def __init__(self, weight: float, offset: float):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)
        torch.nn.init.constant_(self.conv.weight, weight)
        self.offset = offset  # not a weight: a constant of the traced graph
        self.eval()

    def forward(self, images):
        maps = self.conv(images)[:, 0] + self.offset
        return maps.amax(dim=(1, 2)), maps


class _Detector:
    """What `_export_graph` needs of a detector: a name, a config, `graph()` and `infer()`."""

    name = "stand-in"

    def __init__(self, weight: float, offset: float = 0.0):
        self.config, self.module = _Config(), _Graph(weight, offset)

    def graph(self):
        return self.module

    def infer(self, images):
        with torch.no_grad():
            return self.module(images)


def test_a_configuration_is_traced_once_and_again_where_the_check_fails(tmp_path, traces):
    traced = {}
    for i, detector in enumerate([_Detector(1.0), _Detector(2.0), _Detector(2.0, offset=5.0)]):
        checked = export._export_graph(detector, tmp_path / f"{i}.onnx", export.OPSET, traced)
        assert max(checked.values()) < 1e-4
        if i == 1:  # the first graph with the second's weights
            assert len(traces) == 1
    assert len(traces) == 2  # the third's offset is no weight: the check failed, traced afresh
