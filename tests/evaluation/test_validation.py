import numpy as np

from adformer.data import load_root
from adformer.data.folders import validation_split
from adformer.evaluation import validation as validation_module
from adformer.evaluation.validation import VARIANTS, blend, cut_paste, synthetic_validation


def _held_out(root) -> list:
    """The good training images `fit` holds out for validation, over all categories."""
    return [s for category in load_root(root) for s in validation_split(category.train)[1]]


def test_cut_paste_moves_a_patch_of_the_donor():
    rng = np.random.default_rng(0)
    image = np.zeros((64, 64, 3), np.uint8)
    donor = np.full((64, 64, 3), 200, np.uint8)
    out, mask = cut_paste(image, donor, rng)
    assert mask.any() and not mask.all()
    assert (out[mask] == 200).all() and (out[~mask] == 0).all()


def test_blend_mixes_the_defect_in_at_its_opacity_under_the_mask_only():
    image = np.full((8, 8, 3), 100, np.uint8)
    defective = np.full((8, 8, 3), 200, np.uint8)
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:4] = True
    out = blend(image, defective, mask, 0.25)
    assert (out[mask] == 125).all() and (out[~mask] == 100).all()
    assert (blend(image, defective, mask, 1.0)[mask] == 200).all()


def test_fit_keeps_a_validation_signal_without_test_images(fitted_uniad, synthetic_root):
    detector, run = fitted_uniad
    validation = detector.validation_
    assert validation["n_good"] >= 2
    assert validation["n_defect"] == VARIANTS * validation["n_good"]
    # painted defects on these textures are easy, even graded: the signal separates them
    assert validation["image_auroc"] > 0.8 and validation["pixel_auroc"] > 0.8
    # computed on the held-out good images only, reproducibly
    held_out = _held_out(synthetic_root)
    again = synthetic_validation(detector, held_out, detector.config.seed)
    assert again["image_auroc"] == validation["image_auroc"]


def test_validation_defects_are_graded_so_the_signal_does_not_saturate(
    fitted_uniad, synthetic_root, monkeypatch
):
    detector, _ = fitted_uniad
    held_out = _held_out(synthetic_root)
    results = {}
    for opacity in (1.0, 0.25):
        monkeypatch.setattr(validation_module, "OPACITY", (opacity, opacity))
        results[opacity] = synthetic_validation(detector, held_out, detector.config.seed)
    # opaque painted defects on these textures are easy: the signal separates them ...
    assert results[1.0]["image_auroc"] > 0.8 and results[1.0]["pixel_auroc"] > 0.8
    # ... faint ones are harder, and the graded mix lies between the two
    for key in ("image_auroc", "pixel_auroc"):
        assert results[0.25][key] < results[1.0][key] - 0.1
        assert results[0.25][key] < detector.validation_[key] <= results[1.0][key]
