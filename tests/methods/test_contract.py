"""One contract for every registered method, as timm tests every registered model: a method
added later gets all of these checks by registering. Each runs its ``tiny`` preset on a small
generated data set (few-shot methods: trained on one category, adapted to the other)."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import adformer
from adformer.backbones.weights import WEIGHT_PACKAGES
from adformer.data import load_root
from adformer.data.synthetic import make_synthetic_dataset
from adformer.errors import AdformerError
from adformer.evaluation.evaluate import evaluate
from adformer.evaluation.few_shot import adapt
from adformer.methods.base import LEARNING_TYPES
from adformer.methods.registry import get

METHODS = adformer.methods.available()
NEW = "dots"  # the category a few-shot method is adapted to (never trained on)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("contract"), n_train=10, n_test_good=3, n_test_defect=3, size=64
    )


@pytest.fixture(scope="module", params=METHODS)
def fitted(request, root):
    return _fit(request.param, root)


# tiles of 40 pixels, 16 shared, from 64-pixel images: each image is 2 × 2 tiles when
# trained on and 3 × 3 when scored; a 100 × 70 image is scored as 4 × 3 tiles
TILING = {"tile": 40, "tile_overlap": 16}


@pytest.fixture(scope="module", params=METHODS)
def fitted_tiled(request, root):
    return _fit(request.param, root, **TILING)


def _fit(method: str, root, **options):
    torch.manual_seed(0)
    detector = adformer.create(method, preset="tiny", **options)
    detector.fit(_training_data(detector, root), progress=False, device="cpu")
    if detector.learning_type == "few_shot":
        assert detector.categories_ and not detector.is_fitted  # trained, not yet adapted
        adapt(detector, root, shots=2, category=NEW)
    return detector


def _training_data(detector, root) -> list:
    """What `_fit` trains `detector` on: few-shot methods all but the new category, unified
    ones every category, the others the new category alone."""
    categories = load_root(root)
    if detector.learning_type == "few_shot":
        return [c for c in categories if c.name != NEW]
    if detector.learning_type == "unified":
        return categories
    return [c for c in categories if c.name == NEW]


def _images(detector, count: int = 3) -> torch.Tensor:
    size = detector.config.image_size
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method", METHODS)
def test_declares_the_protocol(method):
    cls = get(method)
    assert cls.name == method and cls.learning_type in LEARNING_TYPES
    assert {"paper", "cpu", "gpu", "tiny"} <= set(cls.presets)
    for preset in cls.presets:  # every preset is a valid configuration
        assert adformer.create(method, preset=preset).config.seed == 0


@pytest.mark.parametrize("method", METHODS)
def test_tiny_preset_computes_the_same_with_bf16_instructions_or_without(method):
    # the presets that test and smoke runs use; bf16 autocast has the engine's own tests
    assert adformer.create(method, preset="tiny").config.precision == "fp32"


@pytest.mark.parametrize("method", METHODS)
def test_cpu_and_gpu_presets_need_no_download(method):
    for preset in ("cpu", "gpu"):
        backbone = getattr(adformer.create(method, preset=preset).config, "backbone", None)
        assert backbone is None or backbone in WEIGHT_PACKAGES, (preset, backbone)


@pytest.mark.parametrize("method", METHODS)
def test_bad_options_are_refused_at_create(method):
    with pytest.raises(AdformerError, match="unknown option"):
        adformer.create(method, preset="tiny", no_such_option=1)
    with pytest.raises(AdformerError, match="unknown preset"):
        adformer.create(method, preset="no_such_preset")


@pytest.mark.parametrize("method", METHODS)
def test_an_option_given_as_none_replaces_the_presets_value(method, monkeypatch):
    presets = get(method).presets
    monkeypatch.setitem(presets, "tiny", {**presets["tiny"], "patience": 4})
    assert adformer.create(method, preset="tiny").config.patience == 4
    assert adformer.create(method, preset="tiny", patience=None).config.patience is None  # no stop
    with pytest.raises(AdformerError, match="epochs"):
        adformer.create(method, preset="tiny", epochs=None)


@pytest.mark.parametrize("method", METHODS)
def test_unfitted_detector_refuses_to_predict_and_save(method, tmp_path):
    detector = adformer.create(method, preset="tiny")
    assert not detector.is_fitted
    with pytest.raises(AdformerError, match="not (fitted|adapted)"):
        detector.predict(_images(detector, 1))
    with pytest.raises(AdformerError, match="not fitted"):
        detector.save(tmp_path)


def test_predict_shapes_and_dtypes(fitted):
    size = fitted.config.image_size
    assert fitted.is_fitted and np.isfinite(fitted.threshold_)
    result = fitted.predict(_images(fitted, 3))
    assert result.scores.shape == (3,) and result.scores.dtype == np.float32
    assert result.maps.shape == (3, size, size) and result.maps.dtype == np.float32
    assert result.anomalous.dtype == bool
    assert np.array_equal(result.anomalous, result.scores > fitted.threshold_)
    scores, maps = fitted.infer(_images(fitted, 3))  # the tensor entry gives the same
    assert np.allclose(scores.numpy(), result.scores) and np.allclose(maps.numpy(), result.maps)


def test_image_score_pools_the_map_for_every_method(fitted):
    images, original = _images(fitted, 2), fitted.config
    try:
        scores = {}
        for pool in (1, 4, 10**6):  # the maximum; 4×4 windows; the whole map (at most the map)
            fitted.config = dataclasses.replace(original, score_pool=pool)
            result = fitted.predict(images)
            scores[pool] = result.scores
        windows = torch.nn.functional.avg_pool2d(torch.from_numpy(result.maps)[:, None], 4, 1)
        assert np.allclose(scores[1], result.maps.max((1, 2)), rtol=1e-5)
        assert np.allclose(scores[4], windows.flatten(1).amax(1).numpy(), rtol=1e-5)
        assert np.allclose(scores[10**6], result.maps.mean((1, 2)), rtol=1e-4)
    finally:
        fitted.config = original
    with pytest.raises(AdformerError, match="score_pool must be >= 1"):
        adformer.create(fitted.name, preset="tiny", score_pool=0)
    with pytest.raises(AdformerError, match="score_pool must be >= 1"):  # a config edited too
        dataclasses.replace(original, score_pool=0)


def test_calibrate_sets_the_threshold_again_without_training(fitted, root):
    data = _training_data(fitted, root)
    if fitted.learning_type == "few_shot":  # adapted: `adapt` calibrates it
        with pytest.raises(AdformerError, match="adapt it again"):
            fitted.calibrate(data)
        return
    pool, quantile = fitted.config.score_pool, fitted.config.threshold_quantile
    threshold, validation = fitted.threshold_, fitted.validation_
    weights = _weights(fitted)
    try:
        assert fitted.calibrate(data).threshold_ == pytest.approx(threshold, rel=1e-5)
        again, before = fitted.validation_ or {}, validation or {}  # None: too few held out
        assert again.keys() == before.keys()  # on the same held-out images:
        for key, value in before.items():
            assert again[key] == (value if value is None else pytest.approx(value, rel=1e-5))
        fitted.calibrate(data, score_pool=10**6)  # the map's mean: below its maximum
        assert fitted.config.score_pool == 10**6 and fitted.threshold_ < threshold
        fitted.calibrate(data, score_pool=pool, threshold_quantile=0.5)  # the held-out median
        assert fitted.config.threshold_quantile == 0.5 and fitted.threshold_ <= threshold
        assert fitted.threshold_source_.startswith("quantile 0.5 of")
        assert all(map(torch.equal, weights.values(), _weights(fitted).values()))  # untrained
        with pytest.raises(AdformerError, match="fit again"):
            fitted.calibrate(data, lr=1.0)
        with pytest.raises(AdformerError, match="score_pool"):
            fitted.calibrate(data, score_pool="wide")
    finally:
        fitted.calibrate(data, score_pool=pool, threshold_quantile=quantile)
    assert fitted.threshold_ == pytest.approx(threshold, rel=1e-5)
    with pytest.raises(AdformerError, match="not fitted"):
        adformer.create(fitted.name, preset="tiny").calibrate(data)


def _weights(detector) -> dict[str, torch.Tensor]:
    modules = detector.modules().items()
    return {f"{n}.{k}": v.clone() for n, m in modules for k, v in m.state_dict().items()}


def test_scores_samples_from_files_like_predict(fitted, root):
    samples = load_root(root, [NEW])[0].test[:4]
    batches = list(fitted.score_samples(samples))
    scores = np.concatenate([b.scores for b in batches])
    assert [p for b in batches for p in b.batch.paths] == [str(s.path) for s in samples]
    assert np.allclose(scores, fitted.predict([s.path for s in samples]).scores, rtol=1e-5)


def test_save_then_load_predicts_the_same(fitted, tmp_path):
    fitted.save(tmp_path / "bundle")
    loaded = adformer.load(tmp_path / "bundle")
    assert type(loaded) is type(fitted) and loaded.is_fitted
    assert dataclasses.asdict(loaded.config) == dataclasses.asdict(fitted.config)
    assert loaded.fitted_state() == fitted.fitted_state()
    images = _images(fitted, 2)
    a, b = fitted.predict(images), loaded.predict(images)
    assert np.allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)
    assert np.allclose(a.maps, b.maps, rtol=1e-4, atol=1e-5)
    assert np.array_equal(a.anomalous, b.anomalous)


def test_mask_of_the_wrong_size_is_named(fitted, root, tmp_path):
    spoiled = tmp_path / "spoiled"
    shutil.copytree(root / NEW, spoiled / NEW)
    mask = sorted((spoiled / NEW / "ground_truth").rglob("*.png"))[0]
    Image.new("L", (17, 23), 255).save(mask)
    with pytest.raises(AdformerError, match=mask.name):  # reading the folder
        load_root(spoiled, [NEW])
    # a CategoryData built by hand gets the same check when it is evaluated
    (category,) = load_root(root, [NEW])
    test = [s for s in category.test if s.mask_path is not None]
    test[0] = dataclasses.replace(test[0], mask_path=mask)
    with pytest.raises(AdformerError, match=mask.name):
        evaluate(fitted, [dataclasses.replace(category, test=test)])


@pytest.mark.parametrize("method", METHODS)
def test_labelled_defects_set_the_threshold_and_validate(method, root, monkeypatch):
    """Labelled defects a user gives: a method of good images only keeps them all for the
    threshold and `validation_["labelled"]`, never training on them; one that learns from
    them (ADTR+) trains on most and validates on the rest; a few-shot method refuses them."""
    # 3 of 10 good images held out: the synthetic signal needs 2
    detector = adformer.create(method, preset="tiny", epochs=1, val_fraction=0.3)
    data = _training_data(detector, root)
    for category in data:  # the defects, with their masks, of the categories it trains on
        category.anomalies = [s for s in category.test if s.label]
    given = sum(len(c.anomalies) for c in data)
    if detector.learning_type == "few_shot":
        with pytest.raises(AdformerError, match="no labelled defects"):
            detector.fit(data, progress=False, device="cpu")
        return
    shown = []
    original = type(detector)._training_sets

    def spy(self, train, val, device, anomalies=([], [])):
        shown.append(anomalies)
        return original(self, train, val, device, anomalies)

    monkeypatch.setattr(type(detector), "_training_sets", spy)
    detector.fit(data, progress=False, device="cpu")
    trained_on, validated_on = (len(part) for part in shown[0])
    labelled = detector.validation_["labelled"]
    if detector.supports_anomalies:
        assert trained_on + labelled["n_defect"] == given and 0 < trained_on < given
    else:
        assert (trained_on, validated_on) == (0, 0) and labelled["n_defect"] == given
    assert labelled["n_good"] == detector.validation_["n_good"]  # the same held-out images
    assert 0 <= labelled["image_auroc"] <= 1 and 0 <= labelled["pixel_auroc"] <= 1
    assert detector.threshold_source_.startswith("F1-optimal")
    # the same data, defects included, calibrates to the same threshold and validation
    threshold = detector.threshold_
    assert detector.calibrate(data).threshold_ == pytest.approx(threshold, rel=1e-5)
    assert detector.validation_["labelled"] == pytest.approx(labelled, rel=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_model(method, root):
    """fit depends on the seed alone, not on what ran before in the process."""
    (category,) = load_root(root, ["grating"])
    predictions = []
    for _ in range(2):
        torch.rand(7)  # moves the global random state: it must not matter
        detector = adformer.create(method, preset="tiny", epochs=1)
        detector.fit([category], progress=False, device="cpu")
        if detector.learning_type == "few_shot":
            detector.adapt(category.train[:2], (), category.name)
        predictions.append(detector.predict(_images(detector, 2)).maps)
    assert np.allclose(predictions[0], predictions[1], rtol=0, atol=1e-6)


def test_onnx_export_reproduces_pytorch(fitted, root, tmp_path):
    """The exported graph, run by the torch-free runtime, gives the detector's scores, maps
    and decisions at batch 1 and 5, and on files (same decoding and resizing)."""
    from adformer.deploy.export import TOLERANCE, deviation, export_onnx
    from adformer.runtime import load

    fitted.save(tmp_path / "bundle")
    export_onnx(tmp_path / "bundle", tmp_path / "onnx")
    model = load(tmp_path / "onnx").model()
    for count in (1, 5):
        images = _images(fitted, count)
        expected = tuple(t.numpy() for t in fitted.infer(images))
        found = deviation(expected, model.infer(images.numpy()))
        assert found["scores"] <= TOLERANCE["scores"] and found["maps"] <= TOLERANCE["maps"]
    files = [s.path for s in load_root(root, [NEW])[0].test]
    a, b = fitted.predict(files), model.predict(files)
    assert a.paths == b.paths and np.array_equal(a.anomalous, b.anomalous)
    assert np.allclose(a.scores, b.scores, rtol=TOLERANCE["scores"])


def test_trains_and_scores_on_tiles(fitted_tiled, tmp_path):
    """Every method trains on the tiles of good images and scores an image of any size tile
    by tile: one score and one map at the model's size per image; the bundle keeps the
    tiling, and the ONNX runtime tiles the same way."""
    from adformer.deploy.export import export_onnx
    from adformer.runtime import load

    size = fitted_tiled.config.image_size
    rng = np.random.default_rng(3)
    images = [(rng.random((70, 100, 3)) * 255).astype(np.uint8) for _ in range(2)]
    result = fitted_tiled.predict(images)
    assert result.maps.shape == (2, size, size) and np.isfinite(result.scores).all()
    untiled = fitted_tiled.set_tiling(0).predict(images).scores  # whole images differ
    fitted_tiled.set_tiling(TILING["tile"])
    assert not np.allclose(untiled, result.scores)

    fitted_tiled.save(tmp_path / "bundle")
    loaded = adformer.load(tmp_path / "bundle")
    assert (loaded.config.tile, loaded.config.tile_overlap) == (40, 16)
    assert np.allclose(loaded.predict(images).scores, result.scores, rtol=1e-5, atol=1e-6)

    export_onnx(tmp_path / "bundle", tmp_path / "onnx")
    exported = load(tmp_path / "onnx").model()
    assert exported.tile == 40
    onnx = exported.predict(images)
    assert np.allclose(onnx.scores, result.scores, rtol=1e-3, atol=1e-5)
    assert np.allclose(onnx.maps, result.maps, rtol=1e-3, atol=1e-3 * result.maps.max())
