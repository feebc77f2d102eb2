import math

import numpy as np
import pytest
import torch
from PIL import Image

import adformer
from adformer.data import load_root, validation_split
from adformer.errors import AdformerError
from adformer.evaluation.evaluate import evaluate
from adformer.methods.uniad import UniAD


def test_registered_with_presets():
    assert "uniad" in adformer.methods.available()
    paper = adformer.create("uniad").config
    assert (paper.backbone, paper.image_size, paper.epochs) == ("efficientnet_b4", 224, 1000)
    assert (paper.encoder_layers, paper.decoder_layers, paper.hidden_dim) == (4, 4, 256)
    assert paper.lr_milestones == (800,) and paper.grad_clip == 0.1
    cpu = adformer.create("uniad", preset="cpu").config
    assert (cpu.backbone, cpu.standardise_features, cpu.image_size) == (
        "tf_efficientnet_lite1",
        True,
        256,
    )
    assert (paper.score_pool, cpu.score_pool) == (16, 32)  # the paper's, and chosen on validation


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: adformer.create("nope"), "unknown method"),
        (lambda: adformer.create("uniad", preset="huge"), "unknown preset"),
        (lambda: adformer.create("uniad", hiden_dim=3), "unknown option"),
    ],
)
def test_bad_options_are_clear(call, message):
    with pytest.raises(AdformerError, match=message):
        call()


def test_defects_score_higher_and_maps_localise(fitted_uniad, synthetic_root):
    detector, _ = fitted_uniad
    metrics = evaluate(detector, load_root(synthetic_root)).metrics
    assert metrics["image_auroc"] > 0.8
    assert metrics["pixel_auroc"] > 0.8
    assert metrics["aupro"] > 0.5
    assert set(metrics["per_category"]) == {"dots", "grating"}


def test_training_improved_validation_loss(fitted_uniad):
    history = fitted_uniad[0].train_result_.history
    assert history[-1]["val_loss"] < 0.7 * history[0]["val_loss"]


def test_one_query_per_decoder_layer_and_jitter_only_in_training(fitted_uniad):
    detector, _ = fitted_uniad
    network = detector.network_
    assert all(layer.query.shape == (36, 32) for layer in network.transformer.decoder)
    features = torch.randn(2, 192, 6, 6)
    network.eval()
    assert torch.equal(network(features), network(features))
    network.train()
    tokens = features.flatten(2).transpose(1, 2)
    jittered = network.jitter(tokens)
    # ε ~ N(0, (α‖f‖/C)²): its per-token std matches the formula
    expected = tokens.norm(dim=-1) / tokens.shape[-1] * network.jitter_scale
    ratio = (jittered - tokens).std(dim=-1) / expected
    assert ratio.mean().item() == pytest.approx(1.0, rel=0.1)
    network.eval()


def test_predict_inputs_agree(fitted_uniad, synthetic_root):
    detector, _ = fitted_uniad
    path = synthetic_root / "dots" / "test" / "scratch" / "000.png"
    from_path = detector.predict([path])
    from_pil = detector.predict(Image.open(path))
    from_array = detector.predict(np.asarray(Image.open(path)))
    assert from_path.maps.shape == (1, 96, 96)
    assert np.allclose(from_path.maps, from_pil.maps, atol=1e-5)
    assert np.allclose(from_path.scores, from_array.scores, atol=1e-5)


def test_unfitted_detector_refuses_to_predict():
    with pytest.raises(AdformerError, match="not fitted"):
        UniAD().predict([np.zeros((8, 8, 3), np.uint8)])


def test_bundle_roundtrip_without_training_data(fitted_uniad, synthetic_root, tmp_path):
    import shutil

    detector, run = fitted_uniad
    folder = synthetic_root / "dots" / "test" / "blob"
    images = [np.asarray(Image.open(p)) for p in sorted(folder.iterdir())]
    moved = tmp_path / "bundle"
    shutil.copytree(run, moved)
    loaded = adformer.load(moved, device="cpu")
    expected = detector.predict(images)
    got = loaded.predict(images)
    assert np.allclose(expected.maps, got.maps, atol=1e-5)
    assert loaded.threshold_ == detector.threshold_ and loaded.categories_ == ["dots", "grating"]
    assert sorted(p.name for p in moved.iterdir() if p.suffix != ".pt") == [
        "config.json",
        "model.safetensors",
    ]


def test_neighbour_mask_that_hides_everything_is_refused(synthetic_root):
    detector = adformer.create("uniad", preset="cpu", image_size=32, neighbour_size=7, epochs=1)
    with pytest.raises(AdformerError, match="neighbour mask hides"):
        detector.fit(synthetic_root, progress=False, device="cpu")


def test_feature_cache_and_on_the_fly_train_on_the_same_features(fitted_uniad, synthetic_root):
    from adformer.backbones.cache import ImageTensors, cache_features
    from adformer.data import load_category
    from adformer.data.types import FeatureBatch, ImageBatch

    detector, _ = fitted_uniad
    samples = load_category(synthetic_root, "dots").train[:4]
    size = detector.config.image_size
    cached = cache_features(detector.features, samples, size, 1, 1e9, torch.device("cpu"))
    fallback = cache_features(detector.features, samples, size, 1, 0, torch.device("cpu"))
    assert isinstance(fallback, ImageTensors) and not isinstance(cached, ImageTensors)
    detector.network_.eval()
    images = torch.stack([fallback[i].images for i in range(4)])
    features = torch.stack([cached[i].features for i in range(4)])
    with torch.no_grad():
        on_the_fly = detector._loss(detector.network_, ImageBatch(images))
        from_cache = detector._loss(detector.network_, FeatureBatch(features))
    assert on_the_fly.item() == pytest.approx(from_cache.item(), rel=1e-5)


def test_unreadable_training_image_fails_naming_it(synthetic_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "dots", root / "dots")
    (root / "dots" / "train" / "good" / "005.png").write_bytes(b"\x89PNG truncated")
    detector = adformer.create("uniad", preset="cpu", image_size=96, neighbour_size=3, epochs=1)
    with pytest.raises(AdformerError, match="005.png"):
        detector.fit(root, progress=False, device="cpu")


@pytest.mark.parametrize("cache_gb", [4.0, 0.0], ids=["cached", "on-the-fly"])
def test_standardised_features_have_training_statistics(synthetic_root, tmp_path, cache_gb):
    from adformer.data import load_category
    from adformer.data.dataset import TypedTensorDataset, loader

    torch.manual_seed(0)
    detector = adformer.create(
        "uniad", preset="tiny", epochs=1, standardise_features=True, cache_budget_gb=cache_gb
    )
    train = load_category(synthetic_root, "dots").train
    detector.fit(train, progress=False, device="cpu")
    fit_part = [s for s in train if s not in set(validation_split(train)[1])]
    with torch.no_grad():
        features = torch.cat([detector.features(b.images) for b in loader(fit_part, 64, 8)])
    per_channel = features.transpose(0, 1).flatten(1)
    assert per_channel.mean(1).abs().max() < 1e-3
    assert (per_channel.std(1) - 1).abs().max() < 0.05
    # what the network trains on: the same standardised features, cached or computed per batch
    trained, _ = detector._training_sets(fit_part, [], torch.device("cpu"))
    if cache_gb:
        assert isinstance(trained, TypedTensorDataset)
        assert torch.allclose(trained.tensors[0], features, atol=1e-4)
    else:
        assert not isinstance(trained, TypedTensorDataset)
    detector.save(tmp_path)
    images = torch.rand(2, 3, 64, 64)
    assert np.allclose(detector.predict(images).maps, adformer.load(tmp_path).predict(images).maps)


@pytest.mark.parametrize("cache_gb", [4.0, 0.0], ids=["cached", "on-the-fly"])
@pytest.mark.parametrize("method", ["uniad", "adtr"])
def test_normalised_map_is_each_pixels_z_score_over_the_training_images(
    synthetic_root, tmp_path, method, cache_gb
):
    from adformer.data import load_category
    from adformer.data.dataset import loader

    torch.manual_seed(0)
    detector = adformer.create(
        method, preset="tiny", epochs=1, normalise_map=True, cache_budget_gb=cache_gb
    )
    train = load_category(synthetic_root, "dots").train
    detector.fit(train, progress=False, device="cpu")
    fit_part = [s for s in train if s not in set(validation_split(train)[1])]
    x = torch.cat([b.images for b in loader(fit_part, 64, 8)])
    with torch.no_grad():
        distances, maps = detector._distances(x), detector._maps(x)
    mean, std = distances.mean(0), distances.std(0, unbiased=False)
    assert torch.allclose(maps, (distances - mean) / std, rtol=1e-3, atol=1e-3)
    assert maps.mean(0).abs().max() < 1e-3 and (maps.std(0, unbiased=False) - 1).abs().max() < 1e-3
    detector.save(tmp_path)
    assert np.allclose(detector.predict(x).maps, adformer.load(tmp_path).predict(x).maps)
    # without the option the map is the distance itself, and no statistics are kept for it
    plain = adformer.create(method, preset="tiny", normalise_map=False).build(False, "cpu")
    for name, module in plain.modules().items():  # all but the map's statistics
        module.load_state_dict(detector.modules()[name].state_dict(), strict=False)
        module.eval()
    assert not any("map_mean" in key for m in plain.modules().values() for key in m.state_dict())
    with torch.no_grad():
        assert torch.allclose(plain._maps(x), distances)


def test_max_steps_is_per_category_so_a_unified_model_gets_each_its_share(synthetic_root):
    categories = load_root(synthetic_root)  # two
    options = dict(preset="tiny", epochs=4, batch_size=4)
    trained = adformer.create("uniad", **options)._split(categories).train
    steps = math.ceil(len(trained) / 4)  # an epoch of both categories
    detector = adformer.create("uniad", **options, max_steps=steps)
    detector.fit(categories, progress=False, device="cpu")
    # `steps` for the whole set would allow one epoch; twice that, two
    assert detector.training_["epochs_planned"] == 2 == detector.training_["epochs_run"]
