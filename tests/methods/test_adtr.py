import json
import shutil

import numpy as np
import pytest
import torch

import adformer
from adformer.data import load_root
from adformer.data.elpv import load_elpv
from adformer.data.folders import load_anomalies
from adformer.data.synthetic import make_synthetic_dataset
from adformer.errors import AdformerError


@pytest.fixture(scope="module")
def defects(tmp_path_factory):
    """Labelled training defects for 'dots', in MVTec layout, disjoint from the test set."""
    root = make_synthetic_dataset(
        tmp_path_factory.mktemp("defects"),
        ("dots",),
        n_train=1,
        n_test_good=0,
        n_test_defect=8,
        size=96,
        seed=5,
    )
    shutil.rmtree(root / "dots" / "train")
    shutil.rmtree(root / "dots" / "test" / "good")
    return root


def _tiny(tiny_uniad, **extra):
    options = {k: v for k, v in tiny_uniad.items() if k not in ("neighbour_size",)}
    return {**options, "epochs": 25, **extra}


def test_adtr_is_uniad_with_other_switches():
    uniad, adtr = adformer.create("uniad").config, adformer.create("adtr").config
    assert adtr.stages == (1, 2, 3, 4, 5) and uniad.stages == (1, 2, 3, 4)
    assert not adtr.layerwise_queries and uniad.layerwise_queries
    assert adtr.neighbour_size is None and uniad.neighbour_size == 7
    assert adtr.jitter_scale is None and uniad.jitter_scale == 20.0
    assert (adtr.image_size // adtr.feature_stride) == 16  # the paper text's 16x16 map
    cpu = adformer.create("adtr", preset="cpu").config
    assert cpu.backbone == "tf_efficientnet_lite1"  # chosen on validation (ELPV)
    assert (adtr.score_pool, cpu.score_pool) == (16, 32)  # the paper's, and chosen on validation
    assert cpu.normalise_map and not adtr.normalise_map  # chosen on validation; not the paper's
    assert (adtr.downsample, cpu.downsample) == ("bilinear", "area")  # the neck's; chosen
    assert adformer.create("adtr", preset="gpu").config.normalise_map


def test_one_query_embedding_and_unmasked_attention(synthetic_root, tiny_uniad):
    detector = adformer.create("adtr", **_tiny(tiny_uniad, epochs=1))
    detector.fit(load_root(synthetic_root, ["dots"]), progress=False, device="cpu")
    transformer = detector.network_.transformer
    assert transformer.query.shape == (36, 32) and transformer.mask is None
    assert all(layer.query is None for layer in transformer.decoder)
    assert sum(detector.backbone_.channels) == 16 + 24 + 40 + 112 + 320


# epochs where the rise held at config seeds 0-3 (in fp32, as every tiny_uniad fit; whole:
# 1.22-1.31x at 50 epochs, down to 1.07x at 25; tiled: 1.16-1.27x at 25, down to 1.06x at 50)
@pytest.mark.parametrize(("tile", "size", "epochs"), [(None, 96, 50), (48, 48, 25)])
def test_adtr_plus_raises_scores_of_labelled_anomaly_regions(
    synthetic_root, defects, tiny_uniad, tile, size, epochs
):
    """Map values inside the labelled defects, relative to good images, go up with ADTR+,
    whole or tiled (then each defect's tiles learn from their pieces of its mask; 48-pixel
    tiles of the 96-pixel images, each the model's input as it is)."""
    from adformer.data.dataset import ImageDataset

    pool = load_anomalies(defects, ["dots"])["dots"]
    masks = np.stack([item["mask"].numpy() for item in ImageDataset(pool, size)])
    raised = {}
    for name, anomalies in (("adtr", []), ("adtr+", pool)):
        (category,) = load_root(synthetic_root, ["dots"])
        category.anomalies = anomalies
        torch.manual_seed(0)
        options = dict(anomaly_alpha=10.0, tile=tile, image_size=size, epochs=epochs)
        # the distances themselves (a z-scored map has a mean of ~0 over good images)
        detector = adformer.create("adtr", **_tiny(tiny_uniad, **options, normalise_map=False))
        detector.fit([category], progress=False, device="cpu")
        inside = detector.predict([s.path for s in pool]).maps[masks].mean()
        raised[name] = inside / detector.predict([s.path for s in category.train]).maps.mean()
    assert raised["adtr+"] > 1.1 * raised["adtr"]
    assert "F1-optimal" in detector.threshold_source_


def test_anomaly_loss_forms():
    from adformer.data.types import LabelledFeatureBatch
    from adformer.methods.adtr import ADTRDetector

    detector = ADTRDetector.from_options("cpu", anomaly_alpha=1.0, anomaly_topk=2)
    zero = lambda f: f  # noqa: E731 - a perfect reconstructor: d = 0, φ = 0
    features = torch.zeros(3, 4, 2, 2)
    y = torch.zeros(3, 2, 2)
    y[1, 0, 0] = 1
    has_mask = torch.tensor([True, True, False])
    label = torch.tensor([0.0, 1.0, 1.0])
    loss = detector._loss(zero, LabelledFeatureBatch(features, y, has_mask, label))
    # normal: mean φ = 0; anomalies: −log(1 − exp(−0)) is large -> a perfect copy is penalised
    assert loss > 5
    bigger = torch.ones(3, 4, 2, 2) * 10
    away = lambda f: f - bigger  # noqa: E731 - d = 10 everywhere, φ = sqrt(101) − 1
    phi = 101**0.5 - 1
    expected_normal = phi
    expected_pixel = 0.75 * phi - np.log(1 - np.exp(-0.25 * phi))
    expected_image = -np.log(1 - np.exp(-phi))
    got = detector._loss(away, LabelledFeatureBatch(features, y, has_mask, label)).item()
    assert got == pytest.approx((expected_normal + expected_pixel + expected_image) / 3, rel=1e-4)


def test_synthetic_anomalies_train_and_are_bounded(synthetic_root, tiny_uniad):
    detector = adformer.create("adtr", **_tiny(tiny_uniad, epochs=2, synthetic_anomalies=5))
    detector.fit(load_root(synthetic_root, ["dots"]), progress=False, device="cpu")
    assert len(detector.train_result_.history) == 2
    for bad in (-1, 10**6):
        with pytest.raises(AdformerError, match="synthetic_anomalies"):
            adformer.create("adtr", synthetic_anomalies=bad).fit(synthetic_root, progress=False)


def test_adtr_plus_standardises_with_one_backbone_pass_per_image(synthetic_root, tiny_uniad):
    from adformer.data import load_category
    from adformer.data.dataset import loader

    torch.manual_seed(0)
    options = _tiny(tiny_uniad, epochs=1, synthetic_anomalies=4, standardise_features=True)
    detector = adformer.create("adtr", **options).build(False, "cpu")
    train = load_category(synthetic_root, "dots").train
    seen = []
    aligned = detector.backbone_.aligned
    detector.backbone_.aligned = lambda images, *args: (
        seen.append(len(images)) or aligned(images, *args)
    )
    trained, _ = detector._training_sets(train, [], torch.device("cpu"))
    assert sum(seen) == len(train) + 4  # the good images and the painted ones, once each
    good = trained.tensors[0][: len(train)].transpose(0, 1).flatten(1)
    assert good.mean(1).abs().max() < 1e-3
    assert (good.std(1) - 1).abs().max() < 0.05
    # the network trains on what `features` gives at inference
    with torch.no_grad():
        size = detector.config.image_size
        features = torch.cat([detector.features(b.images) for b in loader(train, size, 8)])
    assert torch.allclose(trained.tensors[0][: len(train)], features, atol=1e-4)


def test_uniad_refuses_anomalies(synthetic_root):
    with pytest.raises(AdformerError, match="good images only"):
        adformer.create("uniad", synthetic_anomalies=3).fit(synthetic_root, progress=False)


def test_anomaly_folder_errors(defects, tmp_path):
    with pytest.raises(AdformerError, match="not being trained"):
        load_anomalies(defects, ["grating"])
    with pytest.raises(AdformerError, match="not found"):
        load_anomalies(tmp_path / "nope", ["dots"])
    empty = tmp_path / "empty" / "dots" / "test" / "crack"
    empty.mkdir(parents=True)
    with pytest.raises(AdformerError, match="no defect images"):
        load_anomalies(tmp_path / "empty", ["dots"])
    broken = tmp_path / "broken"
    shutil.copytree(defects, broken)
    next((broken / "dots" / "ground_truth" / "blob").iterdir()).unlink()
    with pytest.raises(AdformerError, match="no mask for"):
        load_anomalies(broken, ["dots"])


def test_elpv_anomaly_pool_never_in_test():
    (mono,) = load_elpv(["mono"], anomaly_pool=10, seed=3)
    assert len(mono.anomalies) == 10 and all(s.label == 1 for s in mono.anomalies)
    assert not {s.path for s in mono.anomalies} & {s.path for s in mono.test}
    assert sum(s.label for s in mono.test) == 369 - 10
    with pytest.raises(AdformerError, match="anomaly_pool"):
        load_elpv(["mono"], anomaly_pool=-1)


def test_area_downsampling_reaches_the_features_the_bundle_and_the_graph(synthetic_root, tmp_path):
    from adformer.deploy.bundle import CONFIG_FILE
    from adformer.deploy.export import TOLERANCE, deviation, export_onnx
    from adformer.runtime import load

    with pytest.raises(AdformerError, match="unknown downsample 'nearest'"):
        adformer.create("adtr", downsample="nearest")
    detector = adformer.create("adtr", preset="tiny", epochs=1, downsample="area")
    detector.fit(load_root(synthetic_root, ["dots"]), progress=False, device="cpu")
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    # the stride-2…8 stages are averaged over each cell, not read at points
    bilinear = detector.backbone_.aligned(images, detector.config.feature_stride)
    assert not torch.allclose(detector.features(images), bilinear, atol=1e-3)
    detector.save(tmp_path / "bundle")
    assert adformer.load(tmp_path / "bundle").config.downsample == "area"
    export_onnx(tmp_path / "bundle", tmp_path / "onnx")
    expected = tuple(t.numpy() for t in detector.infer(images))
    found = deviation(expected, load(tmp_path / "onnx").model().infer(images.numpy()))
    assert found["scores"] <= TOLERANCE["scores"] and found["maps"] <= TOLERANCE["maps"]
    # a bundle saved before the option existed was fitted on the neck's reading, whatever the
    # preset says now
    meta_path = tmp_path / "bundle" / CONFIG_FILE
    meta = json.loads(meta_path.read_text())
    del meta["config"]["downsample"]
    meta_path.write_text(json.dumps(meta))
    assert adformer.load(tmp_path / "bundle").config.downsample == "bilinear"
