"""RegAD: identity STNs, exact inverse warping, the vectorised Mahalanobis distance, support
views, leave-one-out training, adapting and few-shot testing, nearest-support scoring."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import adformer
from adformer.cli import main
from adformer.data.folders import load_root
from adformer.errors import AdformerError
from adformer.methods.regad import RegAD, RegistrationNetwork, support_views
from adformer.nn.gaussian import Gaussian
from adformer.nn.memory import PatchMemory, PositionMemory
from adformer.nn.stn import MODES, SpatialTransformer, compose, invert, transform_matrix, warp

TINY = dict(preset="cpu", image_size=64, epochs=1, batch_size=8, inference_batch_size=8)


def _smooth(batch: int = 2, channels: int = 3, size: int = 32) -> torch.Tensor:
    """Low-frequency images: bilinear resampling is then nearly exact."""
    return torch.nn.functional.interpolate(
        torch.rand(batch, channels, 4, 4), size, mode="bicubic", align_corners=True
    )


@pytest.mark.parametrize("mode", list(MODES))
def test_untrained_stn_is_the_identity(mode):
    torch.manual_seed(0)
    stn = SpatialTransformer(channels=8, feature_size=16, mode=mode).eval()
    x = torch.rand(3, 8, 16, 16)
    warped, theta = stn(x)
    assert torch.allclose(theta, torch.eye(2, 3).expand(3, 2, 3), atol=1e-6)
    assert torch.allclose(warped, x, atol=1e-5)
    with torch.no_grad():  # as if trained: then `reset` brings the identity back
        for parameter in stn.fc.parameters():
            parameter.add_(torch.randn_like(parameter))
    assert not torch.allclose(stn(x)[1], theta, atol=1e-3)
    stn.reset()
    assert torch.allclose(stn(x)[1], torch.eye(2, 3).expand(3, 2, 3), atol=1e-6)


def test_transform_modes_have_their_own_parameters():
    params = torch.tensor([[0.3, 0.1, -0.2, 0.9, 1.1]])
    rts = transform_matrix(params, "rotation_translation_scale")[0]
    c, s = math.cos(0.3), math.sin(0.3)
    assert torch.allclose(rts, torch.tensor([[c * 0.9, -s, 0.1], [s, c * 1.1, -0.2]]))
    shear = transform_matrix(torch.tensor([[0.2, -0.1]]), "shear")[0]
    assert torch.allclose(shear, torch.tensor([[1.0, 0.2, 0.0], [-0.1, 1.0, 0.0]]))
    with pytest.raises(AdformerError, match="unknown STN mode"):
        SpatialTransformer(8, 16, "perspective")


def test_warp_then_inverse_warp_is_identity_inside():
    x = _smooth()
    theta = transform_matrix(
        torch.tensor([[0.3, 0.05, -0.05, 0.9, 0.95]] * 2), "rotation_translation_scale"
    )
    back = warp(warp(x, theta), invert(theta))
    centre = slice(10, 22)
    assert (back - x)[..., centre, centre].abs().max() < 0.02
    # one composite warp equals two warps in sequence
    other = transform_matrix(torch.tensor([[-0.2, 1.05, 1.0]] * 2), "rotation_scale")
    twice = warp(warp(x, theta), other)
    once = warp(x, compose(theta, other))
    assert (twice - once)[..., centre, centre].abs().max() < 0.02


def test_registered_features_are_the_stage_features_for_identity_stns():
    torch.manual_seed(0)
    config = RegAD.make_config(
        {
            **{k: v for k, v in TINY.items() if k != "preset"},
            **RegAD.presets["cpu"],
            "image_size": 64,
        }
    )
    network = RegistrationNetwork(config, pretrained=False).eval()
    with torch.no_grad():
        features, thetas = network(torch.rand(2, 3, 64, 64))
        registered = network.registered(features, thetas)
    assert [f.shape[-1] for f in features] == [16, 8, 4]
    for f, r in zip(features, registered, strict=True):
        assert torch.allclose(f, r, atol=1e-5)


def test_mahalanobis_matches_a_loop_over_positions():
    torch.manual_seed(0)
    samples, channels, positions = 30, 6, 10
    train = torch.randn(samples, channels, positions)
    gaussian = Gaussian(positions, channels)
    gaussian.fit(train, eps=0.01)
    test = torch.randn(4, channels, positions)
    fast = gaussian.distance(test)
    for p in range(positions):
        cov = torch.cov(train[:, :, p].T) + 0.01 * torch.eye(channels)
        inverse = torch.linalg.inv(cov)
        for b in range(4):
            delta = test[b, :, p] - train[:, :, p].mean(0)
            assert fast[b, p] == pytest.approx(float((delta @ inverse @ delta).sqrt()), rel=1e-4)


def test_ledoit_wolf_covariance_is_scikit_learns_per_position():
    """Fewer samples than channels: each position's covariance is scikit-learn's Ledoit-Wolf
    estimate (rescaled from its 1/N to the sample covariance's 1/(N − 1)), and it is well
    conditioned where the sample covariance is singular."""
    from sklearn.covariance import LedoitWolf

    torch.manual_seed(0)
    samples, channels, positions = 12, 20, 5
    train = torch.randn(samples, channels, positions, dtype=torch.float64)
    train[:, 1] = train[:, 0] * 3  # correlated channels, as a backbone's are
    gaussian = Gaussian(positions, channels).double()
    gaussian.fit(train, eps=0.0, estimator="ledoit_wolf")
    for p in range(positions):
        expected = LedoitWolf().fit(train[:, :, p].numpy()).covariance_ * samples / (samples - 1)
        found = gaussian.cholesky[p] @ gaussian.cholesky[p].T
        assert np.allclose(found.numpy(), expected, rtol=1e-8, atol=1e-10)
    sample = Gaussian(positions, channels).double()
    sample.fit(train, eps=1e-6)
    assert torch.linalg.cond(sample.cholesky[0]) > 100 * torch.linalg.cond(gaussian.cholesky[0])
    with pytest.raises(ValueError, match="estimator"):
        gaussian.fit(train, eps=0.0, estimator="oas")


def test_bad_options_are_refused_before_training():
    with pytest.raises(AdformerError, match="multiple of 16"):
        adformer.create("regad", **{**TINY, "image_size": 100})
    with pytest.raises(AdformerError, match="channels"):
        adformer.create("regad", **{**TINY, "channels": 0})
    with pytest.raises(AdformerError, match="unknown STN mode"):
        adformer.create("regad", **{**TINY, "stn_mode": "warp"})
    with pytest.raises(AdformerError, match="support_views"):
        adformer.create("regad", **{**TINY, "support_views": "all"})
    with pytest.raises(AdformerError, match="covariance must be"):
        adformer.create("regad", **{**TINY, "covariance": "oas"})


def test_support_views():
    images = torch.rand(2, 3, 32, 32)
    views = support_views(images)
    assert views.shape == (44, 3, 32, 32)
    assert torch.equal(views[:2], images)
    assert torch.equal(views[2 * 17 : 2 * 18], images.flip(-1))  # after 8 rotations, 8 shifts
    grey = views[2 * 18 : 2 * 19]
    assert torch.allclose(grey[:, 0], grey[:, 1])
    assert torch.equal(views[2 * 19 : 2 * 20], torch.rot90(images, 1, dims=(-2, -1)))
    # parts that arrive aligned: the small pose changes among them, in the same order
    small = support_views(images, "small")
    assert small.shape == (18, 3, 32, 32)
    paper_small = [0, 4, 5, 13, 14, 15, 16, 17, 18]  # original, ±π/16, the ±10 % shifts, flip, grey
    assert torch.equal(small, views.view(22, 2, 3, 32, 32)[paper_small].flatten(0, 1))
    assert torch.equal(support_views(images, "none"), images)
    with pytest.raises(AdformerError, match="support_views"):
        support_views(images, "smal")


@pytest.fixture(scope="module")
def regad_root(tmp_path_factory):
    from adformer.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(
        tmp_path_factory.mktemp("regad"),
        categories=("grating", "dots", "checker"),
        n_train=8,
        n_test_good=4,
        n_test_defect=4,
        size=64,
    )


def test_leave_one_out_never_trains_on_the_excluded_category(regad_root, tmp_path, monkeypatch):
    seen = []
    original = RegAD._training_sets

    def spy(self, train, val, device, anomalies=([], [])):
        seen.extend(s.category for s in train + val)
        return original(self, train, val, device, anomalies)

    monkeypatch.setattr(RegAD, "_training_sets", spy)
    run = tmp_path / "run"
    fit = ["fit", "--method", "regad", "--data", str(regad_root), "--out", str(run)]
    fit += ["--preset", "cpu", "--image-size", "64", "--epochs", "1", "--exclude", "checker"]
    assert main(fit) == 0
    assert seen and set(seen) == {"grating", "dots"}
    assert adformer.load(run).categories_ == ["dots", "grating"]
    assert main([*fit[:-1], "carpet"]) == 2  # an unknown category is refused

    # few-shot test on the excluded category: mean and spread over rounds, contract keys
    out = tmp_path / "fewshot.json"
    test = ["test", str(run), "--data", str(regad_root), "--category", "checker"]
    assert main([*test, "--shots", "2", "--rounds", "2", "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert {"image_auroc", "image_auroc_std", "pixel_auroc", "aupro", "per_category"} <= set(
        metrics
    )
    assert metrics["shots"] == 2 and metrics["rounds"] == 2

    # adapt once, then predict with the adapted bundle; the plain run refuses to predict
    adapted = tmp_path / "adapted"
    adapt = ["adapt", str(run), "--data", str(regad_root), "--category", "checker"]
    assert main([*adapt, "--shots", "2", "--out", str(adapted)]) == 0
    images = str(regad_root / "checker" / "test")
    assert main(["predict", str(adapted), images, "--out", str(tmp_path / "pred")]) == 0
    assert main(["predict", str(run), images, "--out", str(tmp_path / "no")]) == 2
    # `test` on an adapted bundle evaluates the category it was adapted to
    adapted_json = tmp_path / "adapted.json"
    assert main(["test", str(adapted), "--data", str(regad_root), "--json", str(adapted_json)]) == 0
    assert list(json.loads(adapted_json.read_text())["per_category"]) == ["checker"]
    # a new product is often just a folder of good images
    folder = str(regad_root / "checker" / "train" / "good")
    assert main(["adapt", str(run), "--data", folder, "--shots", "3", "--out", str(adapted)]) == 0
    adapted_ = adformer.load(adapted).adapted_
    assert adapted_["category"] == "good" and adapted_["shots"] == 3
    assert len(adapted_["support"]) == 3
    assert main(["adapt", str(run), "--data", folder, "--shots", "99", "--out", "x"]) == 2


def test_adapted_model_finds_defects_and_roundtrips(regad_root, tmp_path):
    categories = load_root(regad_root)
    torch.manual_seed(0)
    detector = adformer.create("regad", **TINY, channels=40)
    detector.fit([c for c in categories if c.name != "dots"], progress=False, device="cpu")
    with pytest.raises(AdformerError, match="not adapted"):
        detector.predict(torch.rand(1, 3, 64, 64))
    (dots,) = [c for c in categories if c.name == "dots"]
    detector.adapt(dots.train[:4], dots.train[4:], "dots")
    assert detector.normal_.mean.shape == (16 * 16, 40)  # the channel subset
    from adformer.evaluation.evaluate import evaluate

    metrics = evaluate(detector, [dots]).metrics
    assert metrics["pixel_auroc"] > 0.8
    detector.save(tmp_path)
    loaded = adformer.load(tmp_path)
    images = torch.rand(2, 3, 64, 64)
    assert np.allclose(detector.predict(images).maps, loaded.predict(images).maps, atol=1e-5)
    assert loaded.adapted_ == detector.adapted_
    assert loaded.adapted_["support"] == [str(s.path) for s in dots.train[:4]]


@pytest.mark.parametrize("train_backbone", [False, True])
def test_the_backbone_trains_only_when_asked(regad_root, train_backbone):
    categories = load_root(regad_root)
    torch.manual_seed(0)
    detector = adformer.create("regad", **TINY, train_backbone=train_backbone)
    detector.fit([c for c in categories if c.name != "dots"], progress=False, device="cpu")
    fresh = RegistrationNetwork(detector.config, pretrained=True)
    trained = detector.model_.state_dict()
    moved = {n for n, v in fresh.state_dict().items() if not torch.equal(trained[n], v)}
    # the backbone's weights and batch-norm running statistics
    assert any(n.startswith("stages.") for n in moved) == train_backbone
    assert any(n.startswith("transformers.") for n in moved)
    assert any(n.startswith("encoder.") for n in moved)


def test_position_memory_is_the_distance_to_the_nearest_sample_at_each_position():
    torch.manual_seed(0)
    samples, queries = torch.randn(6, 4, 9), torch.randn(3, 4, 9)
    memory = PositionMemory(positions=9, samples=6, channels=4)
    memory.fit(samples)
    loop = torch.stack(
        [
            torch.stack([(samples[:, :, p] - q[:, p]).norm(dim=1).min() for p in range(9)])
            for q in queries
        ]
    )
    assert torch.allclose(memory.distance(queries), loop, atol=1e-5)
    assert torch.allclose(memory.distance(samples), torch.zeros(6, 9), atol=1e-3)


def test_patch_memory_is_the_distance_to_the_nearest_sample_feature_anywhere(monkeypatch):
    torch.manual_seed(0)
    samples, queries = torch.randn(6, 4, 9), torch.randn(3, 4, 9)
    memory = PatchMemory(samples=6 * 9, channels=4)
    memory.fit(samples)
    bank = samples.permute(0, 2, 1).reshape(-1, 4)
    loop = torch.stack(
        [torch.stack([(bank - q[:, p]).norm(dim=1).min() for p in range(9)]) for q in queries]
    )
    assert torch.allclose(memory.distance(queries), loop, atol=1e-5)
    moved = samples[:2].roll(3, dims=2)  # a sample's features at other positions: still found
    assert memory.distance(moved).max() < 0.01 * loop.min()
    monkeypatch.setattr(PatchMemory, "CHUNK", 7 * 54)  # 7 queries at a time: the same distances
    assert torch.allclose(memory.distance(queries), loop, atol=1e-5)


def test_patch_memory_exports_as_one_product_with_a_dynamic_batch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    memory = PatchMemory(samples=6 * 9, channels=4)
    memory.fit(torch.randn(6, 4, 9))
    batch = torch.export.Dim("batch")

    class Distance(torch.nn.Module):  # what RegAD's graph calls, traced alone
        def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
            return memory.distance(embeddings)

    program = torch.onnx.export(
        Distance(),
        (torch.randn(2, 4, 9),),
        dynamo=True,
        input_names=["embeddings"],
        dynamic_shapes=({0: batch},),
        verbose=False,
    )
    program.save(tmp_path / "memory.onnx")
    session = ort.InferenceSession(tmp_path / "memory.onnx", providers=["CPUExecutionProvider"])
    queries = torch.randn(5, 4, 9)
    (found,) = session.run(None, {"embeddings": queries.numpy()})
    assert np.allclose(found, memory.distance(queries).numpy(), atol=1e-4)


def test_nearest_scoring_remembers_the_support_views_and_roundtrips(regad_root, tmp_path):
    """Per position ("nearest") and at any position ("patches"): adapted without retraining,
    saved and loaded; "nearest" exported too (the patch memory's export is tested alone)."""
    from adformer.deploy.export import TOLERANCE, deviation, export_onnx
    from adformer.runtime import load

    categories = load_root(regad_root)
    torch.manual_seed(0)
    detector = adformer.create("regad", **TINY, channels=40, scoring="nearest")
    detector.fit([c for c in categories if c.name != "dots"], progress=False, device="cpu")
    (dots,) = [c for c in categories if c.name == "dots"]
    support = torch.stack([torch.rand(3, 64, 64) for _ in range(2)])
    detector.adapt(support, category="dots")
    assert detector.normal_.features.shape == (16 * 16, 22 * 2, 40)  # every view, every position
    with torch.no_grad():
        remembered = detector.normal_.distance(detector.embed(support))
        others = detector.normal_.distance(detector.embed(torch.rand(2, 3, 64, 64)))
    assert remembered.max() < 0.01 * others.min()  # each support image is in the memory
    detector.config.support_views = "small"
    detector.adapt(support, category="dots")
    assert detector.normal_.features.shape == (16 * 16, 9 * 2, 40)
    detector.config.scoring, detector.config.support_views = "patches", "none"
    detector.adapt(support, category="dots")
    assert detector.normal_.features.shape == (2 * 16 * 16, 40)  # every position of each image
    with torch.no_grad():
        remembered = detector.normal_.distance(detector.embed(support))
    assert remembered.max() < 0.01 * others.min()  # (at any position: the unit test above)
    loaded = detector.save(tmp_path / "patches") and adformer.load(tmp_path / "patches")
    assert isinstance(loaded.normal_, PatchMemory)
    images = torch.rand(2, 3, 64, 64)
    assert np.allclose(detector.predict(images).maps, loaded.predict(images).maps, atol=1e-5)
    detector.config.scoring, detector.config.support_views = "nearest", "paper"
    detector.adapt(dots.train[:4], dots.train[4:], "dots")
    from adformer.evaluation.evaluate import evaluate

    assert evaluate(detector, [dots]).metrics["pixel_auroc"] > 0.8
    detector.save(tmp_path / "bundle")
    loaded = adformer.load(tmp_path / "bundle")
    images = torch.rand(2, 3, 64, 64)
    assert np.allclose(detector.predict(images).maps, loaded.predict(images).maps, atol=1e-5)
    export_onnx(tmp_path / "bundle", tmp_path / "onnx")
    expected = tuple(t.numpy() for t in detector.infer(images))
    found = deviation(expected, load(tmp_path / "onnx").model().infer(images.numpy()))
    assert found["scores"] <= TOLERANCE["scores"] and found["maps"] <= TOLERANCE["maps"]
    with pytest.raises(AdformerError, match="scoring"):
        adformer.create("regad", **TINY, scoring="knn")


def test_feature_pool_averages_each_feature_over_its_neighbourhood_and_exports(
    regad_root, tmp_path
):
    from adformer.deploy.export import TOLERANCE, deviation, export_onnx
    from adformer.runtime import load

    categories = load_root(regad_root)
    torch.manual_seed(0)
    detector = adformer.create("regad", **TINY, channels=40, feature_pool=3)
    detector.fit([c for c in categories if c.name != "dots"], progress=False, device="cpu")
    (dots,) = [c for c in categories if c.name == "dots"]
    detector.adapt(dots.train[:4], dots.train[4:], "dots")
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        pooled = detector.embed(images).view(2, 40, 16, 16)
        detector.config.feature_pool = 1
        single = detector.embed(images).view(2, 40, 16, 16)
        detector.config.feature_pool = 3
    for row, col in [(0, 0), (0, 7), (5, 9), (15, 15)]:  # corners average what the image holds
        near = single[..., max(row - 1, 0) : row + 2, max(col - 1, 0) : col + 2]
        assert torch.allclose(pooled[..., row, col], near.mean((-2, -1)), atol=1e-5)
    from adformer.evaluation.evaluate import evaluate

    assert evaluate(detector, [dots]).metrics["pixel_auroc"] > 0.8
    detector.save(tmp_path / "bundle")
    export_onnx(tmp_path / "bundle", tmp_path / "onnx")
    expected = tuple(t.numpy() for t in detector.infer(images))
    found = deviation(expected, load(tmp_path / "onnx").model().infer(images.numpy()))
    assert found["scores"] <= TOLERANCE["scores"] and found["maps"] <= TOLERANCE["maps"]
    with pytest.raises(AdformerError, match="feature_pool must be an odd number"):
        adformer.create("regad", **TINY, feature_pool=2)


def test_an_unadapted_model_validates_other_scoring_options_without_training(regad_root):
    categories = [c for c in load_root(regad_root) if c.name != "dots"]
    torch.manual_seed(0)
    detector = adformer.create("regad", **TINY, channels=40, val_fraction=0.25)
    detector.fit(categories, progress=False, device="cpu")  # 2 of 8 held out per category
    weights = {k: v.clone() for k, v in detector.model_.state_dict().items()}
    assert detector.validation_["shots"] == detector.config.shots
    detector.validation_ = None
    detector.calibrate(categories, scoring="nearest", feature_pool=3)
    assert detector.config.scoring == "nearest" and detector.config.feature_pool == 3
    assert set(detector.validation_["per_category"]) == {c.name for c in categories}
    assert detector.normal_ is None  # validated on adapted copies; still unadapted
    for key, value in detector.model_.state_dict().items():
        assert torch.equal(value, weights[key]), key
    with pytest.raises(AdformerError, match="fit again"):
        detector.calibrate(categories, image_size=128)
    (dots,) = [c for c in load_root(regad_root) if c.name == "dots"]
    assert isinstance(detector.adapt(dots.train[:4]).normal_, PositionMemory)
