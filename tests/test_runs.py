"""The run API (`adformer.fit`, `adformer.Run`) does what the CLI does, from Python."""

import csv
import json

import numpy as np
import pytest
import torch

import adformer
from adformer.cli import main
from adformer.errors import AdformerError
from adformer.evaluation.predictions import write_predictions


def test_one_class_method_fits_one_model_per_category(synthetic_root, tmp_path):
    torch.manual_seed(0)
    run = adformer.fit("adtr", synthetic_root, tmp_path / "run", preset="tiny", progress=False)
    assert run.per_category and set(run.bundles) == {"dots", "grating"}
    index = json.loads((tmp_path / "run" / "runs.json").read_text())
    assert index["method"] == "adtr" and index["categories"] == ["dots", "grating"]
    assert run.detector("dots").categories_ == ["dots"]

    reopened = adformer.Run.open(tmp_path / "run")
    assert reopened.bundles == run.bundles and reopened.method == "adtr"
    metrics = reopened.test(synthetic_root).metrics
    assert list(metrics["per_category"]) == ["dots", "grating"]
    for name, result in metrics["per_category"].items():
        assert result["trained_on"] == [name]  # each category tested by its own model
    with pytest.raises(AdformerError, match="one model per category.*dots, grating"):
        adformer.load(tmp_path / "run")
    loaded = adformer.load(tmp_path / "run", category="grating")
    images = torch.rand(2, 3, 64, 64)
    assert np.allclose(
        loaded.predict(images).scores, run.detector("grating").predict(images).scores, rtol=1e-5
    )


def test_python_run_equals_the_cli_run(synthetic_root, tmp_path):
    torch.manual_seed(0)
    api = adformer.fit(
        "uniad",
        synthetic_root,
        tmp_path / "api",
        categories=["dots"],
        preset="tiny",
        progress=False,
    )
    torch.manual_seed(0)
    cli = ["fit", "--method", "uniad", "--data", str(synthetic_root), "--category", "dots"]
    assert main([*cli, "--preset", "tiny", "--out", str(tmp_path / "cli")]) == 0
    images = torch.rand(2, 3, 64, 64)
    ours, theirs = api.detector().predict(images), adformer.load(tmp_path / "cli").predict(images)
    assert np.allclose(ours.maps, theirs.maps, atol=1e-6)


def test_exclude_and_unknown_categories(synthetic_root, tmp_path):
    with pytest.raises(AdformerError, match="no categories \\['nope'\\]"):
        adformer.fit("regad", synthetic_root, tmp_path, exclude=["nope"], preset="tiny")
    with pytest.raises(AdformerError, match="leaves no category"):
        adformer.fit("regad", synthetic_root, tmp_path, exclude=["dots", "grating"], preset="tiny")
    with pytest.raises(AdformerError, match="unknown option"):  # before any data is read
        adformer.fit("uniad", tmp_path / "missing", tmp_path, preset="tiny", bogus=1)


def test_prediction_writer(fitted_uniad, synthetic_root, tmp_path):
    detector, _ = fitted_uniad
    test = synthetic_root / "dots" / "test"
    summary = write_predictions(detector, [test], tmp_path / "out", chunk=5)
    rows = list(csv.DictReader(open(tmp_path / "out" / "scores.csv")))
    assert summary.scored == len(rows) == 12 and not summary.skipped
    assert summary.flagged == sum(int(r["anomalous"]) for r in rows)
    expected = detector.predict([r["path"] for r in rows]).scores
    assert np.allclose([float(r["score"]) for r in rows], expected, rtol=1e-5)
    assert all((tmp_path / "out" / r["overlay"]).is_file() for r in rows)


def test_run_loads_a_model_again_only_for_another_device(tmp_path, monkeypatch):
    import types

    import adformer.deploy.bundle as bundle

    def load_bundle(path, device):
        loads.append(device)
        return types.SimpleNamespace(device_=torch.device(device or "cpu"))

    loads = []
    monkeypatch.setattr(bundle, "load_bundle", load_bundle)
    run = adformer.Run(tmp_path, "uniad", {None: tmp_path})
    on_cpu = run.detector()
    assert run.detector() is on_cpu and run.detector(device="cpu") is on_cpu
    assert run.detector(device="meta").device_ == torch.device("meta")
    assert loads == [None, "meta"]
