"""InTra: window arithmetic, the covered patch never seen, switches, GMS, batched inference,
size selection, and a tiny fit that finds defects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import adformer
from adformer.data.folders import load_root
from adformer.errors import AdformerError
from adformer.evaluation.evaluate import evaluate
from adformer.methods.intra import (
    InTra,
    RandomWindows,
    _choose_size,
    _smoothed_best,
    dihedral,
    inference_windows,
    patchify,
    unpatchify,
    window_origin,
)
from adformer.nn.inpainting_transformer import InpaintingTransformer
from adformer.nn.similarity import gms

TINY = dict(
    preset="cpu",
    image_size=64,
    patch_size=8,
    window=5,
    dim=32,
    depth=3,
    heads=2,
    windows_per_image=40,
    windows_per_epoch=None,
    epochs=8,
    patience=None,
    batch_size=64,
    lr=2e-3,
    inference_batch_size=4,
)


def _built(**options) -> InTra:
    return adformer.create("intra", **{**TINY, **options}).build(pretrained=False, device="cpu")


@pytest.mark.parametrize("grid,window", [(8, 5), (9, 7), (7, 7), (16, 7)])
def test_window_placement_at_the_borders(grid, window):
    t = np.arange(grid)
    origin = window_origin(t, grid, window)
    assert (origin >= 0).all() and (origin <= grid - window).all()
    assert ((origin <= t) & (t < origin + window)).all()  # the patch is inside its window
    half = window // 2
    inner = (t >= half) & (t <= grid - 1 - half)
    assert (origin[inner] == t[inner] - half).all()  # centred wherever the grid allows
    assert origin[0] == 0 and origin[-1] == grid - window  # pushed inwards at the borders
    # paper's 1-based formula (InTra, arXiv:2104.13897 eq. 4) gives the same windows
    g = np.maximum(1, (t + 1) - half)
    assert ((g - np.maximum(0, g + window - grid - 1)) - 1 == origin).all()


def test_every_patch_is_reconstructed_exactly_once():
    ids, inside = inference_windows(9, 5)
    assert ids.shape == (81, 25)
    own = ids[torch.arange(81), inside]
    assert torch.equal(own, torch.arange(81))  # each window's covered token is its own patch


def test_patchify_roundtrip():
    images = torch.rand(2, 3, 24, 32)
    patches = patchify(images, 8)
    assert patches.shape == (2, 12, 192)
    assert torch.equal(unpatchify(patches, 8, 3, 4), images)


def test_covered_patch_never_reaches_the_output():
    torch.manual_seed(0)
    network = InpaintingTransformer(patch_dim=48, positions=64, dim=32, depth=3, heads=2).eval()
    patches = torch.rand(3, 25, 48)
    ids = torch.randint(0, 64, (3, 25))
    covered = torch.tensor([0, 12, 24])
    changed = patches.clone()
    changed[torch.arange(3), covered] = torch.rand(3, 48)
    other = patches.clone()
    other[:, 6] = torch.rand(3, 48)  # a visible patch (never the covered one above)
    with torch.no_grad():
        out = network(patches, ids, covered)
        assert torch.equal(out, network(changed, ids, covered))
        assert not torch.allclose(out, network(other, ids, covered))


def test_attention_and_long_residual_switches():
    torch.manual_seed(0)
    mfsa = InpaintingTransformer(48, 64, 32, 4, 2, feature_attention=True)
    msa = InpaintingTransformer(48, 64, 32, 4, 2, feature_attention=False)
    block_q = mfsa.blocks[0].attention.q
    assert isinstance(block_q, torch.nn.Sequential)  # D → 2D → D/2 with GELU
    assert [m.weight.shape for m in block_q if hasattr(m, "weight")] == [(64, 32), (16, 64)]
    assert isinstance(msa.blocks[0].attention.q, torch.nn.Linear)
    no_long = InpaintingTransformer(48, 64, 32, 4, 2, long_residual=False)
    no_long.load_state_dict(mfsa.state_dict())  # same weights, only the switch differs
    x, ids, covered = torch.rand(2, 25, 48), torch.randint(0, 64, (2, 25)), torch.tensor([3, 7])
    with torch.no_grad():
        assert not torch.allclose(mfsa(x, ids, covered), no_long(x, ids, covered))
        mfsa.long_residual = False
        assert torch.allclose(mfsa(x, ids, covered), no_long(x, ids, covered))


def test_gms_is_one_for_identical_images_and_lower_otherwise():
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(gms(x, x), torch.ones(2, 16, 16))
    assert (gms(x, torch.rand(2, 3, 16, 16)) < 1).any()


def test_training_windows_match_the_rotated_image():
    detector = _built()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    detector._pixels = images
    grid, window = detector.grid, detector.config.window
    # one batch of all eight rotations/flips, from both images, at random origins
    u = torch.rand(8, 4, generator=torch.Generator().manual_seed(0))
    u[:, 2] = (torch.arange(8) + 0.5) / 8
    u[0, :2] = torch.tensor([0.999, 0.2])  # the last origin row included
    index = torch.tensor([0, 1] * 4)
    crops, ids, covered = detector._windows_of(index, u)
    for op in range(8):
        rotated = patchify(dihedral(images[index[op], None].float() / 255, op), 8)[0]
        assert torch.equal(patchify(crops[op, None], 8)[0], rotated[ids[op]])
    assert ids[0, 0] == (grid - window) * grid + int(0.2 * (grid - window + 1))
    assert covered[0].item() == int(u[0, 3] * window**2)


def test_batched_inference_equals_window_by_window():
    torch.manual_seed(0)
    detector = _built()
    network = detector.network_.eval()
    images = torch.rand(2, 3, 64, 64)
    ids, inside = inference_windows(detector.grid, detector.config.window)
    with torch.no_grad():
        batched = detector._inpaint_all(images)
        patches = patchify(images, 8)
        single = torch.stack(
            [
                network(patches[:, ids[p]], ids[p].expand(2, -1), inside[p].expand(2))
                for p in range(64)
            ],
            dim=1,
        )
    assert torch.allclose(batched, unpatchify(single, 8, 8, 8), atol=1e-5)


def test_windows_per_epoch_fixes_the_steps_whatever_the_category_size(monkeypatch):
    # the images themselves do not matter here: only how many windows are cut from which
    monkeypatch.setattr("adformer.methods.intra.preload", lambda samples, *_: len(samples))
    spread = RandomWindows(images=3, count=7)
    assert [int(spread[i].index) for i in range(7)] == [0, 0, 0, 1, 1, 2, 2]
    assert [int(RandomWindows(3, 6)[i].index) for i in range(6)] == [0, 0, 1, 1, 2, 2]
    detector = _built(windows_per_epoch=50)
    images = [None] * 20
    for train in (4, 16):
        windows, held_out = detector._training_sets(images[:train], images[train:], "cpu")
        assert len(windows) == 50
        assert len(held_out) == (20 - train) * round(50 / train)
    per_image, _ = _built()._training_sets(images[:4], images[4:], "cpu")
    assert len(per_image) == 4 * TINY["windows_per_image"]
    with pytest.raises(AdformerError, match="windows_per_epoch"):
        adformer.create("intra", **{**TINY, "windows_per_epoch": 0})


def test_size_selection_rule():
    assert _choose_size({256: 0.0100, 320: 0.00995, 512: 0.0090}, 1e-4) == 256
    assert _choose_size({256: 0.0100, 320: 0.0098, 512: 0.00975}, 1e-4) == 320
    assert _choose_size({256: 0.0100, 320: 0.0098, 512: 0.0090}, 1e-4) == 512
    history = [{"train_loss": 1, "val_loss": v} for v in (5, 1, 5, 2, 2, 2)]
    assert _smoothed_best(history, 1) == pytest.approx(2.0)  # a lone dip does not win


def test_bad_sizes_are_refused():
    with pytest.raises(AdformerError, match="multiple of patch"):
        adformer.create("intra", **{**TINY, "image_size": 60})
    with pytest.raises(AdformerError, match="smaller than"):
        adformer.create("intra", **{**TINY, "image_size": 32})
    with pytest.raises(AdformerError, match="divide by heads"):
        adformer.create("intra", **{**TINY, "dim": 36, "heads": 4})


@pytest.fixture(scope="module")
def fitted_intra(tmp_path_factory):
    from adformer.data.synthetic import make_synthetic_dataset

    root = make_synthetic_dataset(
        tmp_path_factory.mktemp("texture"),
        categories=("grating",),
        n_train=16,
        n_test_good=6,
        n_test_defect=6,
        size=64,
    )
    torch.manual_seed(0)
    detector = adformer.create("intra", **TINY).fit(root, progress=False, device="cpu")
    return detector, root


def test_fit_finds_defects_and_roundtrips(fitted_intra, tmp_path):
    detector, root = fitted_intra
    metrics = evaluate(detector, load_root(root)).metrics
    assert metrics["pixel_auroc"] > 0.8 and metrics["image_auroc"] > 0.7
    assert detector.stats_.mean_diff.abs().sum() > 0  # fitted on the training images
    detector.save(tmp_path)
    loaded = adformer.load(tmp_path, "cpu")
    images = torch.rand(2, 3, 64, 64)
    assert np.allclose(detector.predict(images).maps, loaded.predict(images).maps, atol=1e-6)
    assert torch.allclose(loaded.stats_.mean_diff, detector.stats_.mean_diff)


def test_normalise_map_divides_by_each_pixels_training_variance(fitted_intra):
    from adformer.data.dataset import loader

    detector, root = fitted_intra  # the `cpu` preset normalises the map
    assert detector.config.normalise_map
    train = detector._split(load_root(root)).train  # what `fit` computed the statistics on
    x = torch.cat([batch.images for batch in loader(train, 64, 8)])
    diff = detector._diff(x)[1]
    paper = (diff - diff.mean(0)).square()  # eq. 7
    assert torch.allclose(detector.stats_.mean_diff, diff.mean(0), atol=1e-6)
    assert torch.allclose(detector.stats_.map_var, paper.mean(0), rtol=1e-4, atol=1e-10)
    assert torch.allclose(detector._maps(x), paper / paper.mean(0), rtol=1e-3, atol=1e-4)
    # the paper's map, from the same network and mean, has no such buffer and is not divided
    unscaled = adformer.create("intra", **TINY, normalise_map=False).build(False, "cpu")
    unscaled.network_.load_state_dict(detector.network_.state_dict())
    unscaled.stats_.mean_diff.copy_(detector.stats_.mean_diff)
    assert not hasattr(unscaled.stats_, "map_var")
    assert torch.allclose(unscaled._maps(x), (diff - detector.stats_.mean_diff).square())


def test_reconstruction_resembles_the_image(fitted_intra):
    detector, root = fitted_intra
    from adformer.data.dataset import loader

    batch = next(iter(loader(load_root(root)[0].train[:4], 64, 4)))
    x = batch.images
    recon = detector.reconstruct(x)
    assert recon.shape == x.shape
    # a collapsed inpainter predicts each image's mean colour: the reconstruction must beat
    # that by a wide margin, i.e. carry a good share of the image's variance (R² per image)
    error = (recon - x).square().mean((1, 2, 3))
    flat = (x - x.mean((2, 3), keepdim=True)).square().mean((1, 2, 3))
    r2 = 1 - error / flat
    assert (r2 > 0.5).all(), r2


def test_auto_image_size_trains_each_candidate(tmp_path):
    from adformer.data.synthetic import make_synthetic_dataset

    root = make_synthetic_dataset(
        tmp_path, categories=("dots",), n_train=6, n_test_good=1, n_test_defect=1, size=64
    )
    detector = adformer.create(
        "intra",
        **{
            **TINY,
            "image_size": "auto",
            "auto_sizes": (40, 48),
            "auto_epochs": 2,
            "epochs": 2,
            "windows_per_image": 8,
        },
    ).fit(root, progress=False, device="cpu")
    assert set(detector.image_size_selection_) == {"40", "48"}
    assert detector.config.image_size in (40, 48)
