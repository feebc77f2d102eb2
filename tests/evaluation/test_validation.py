import numpy as np

from adformer.data import load_root
from adformer.data.folders import validation_split
from adformer.evaluation.validation import cut_paste, synthetic_validation


def test_cut_paste_moves_a_patch_of_the_donor():
    rng = np.random.default_rng(0)
    image = np.zeros((64, 64, 3), np.uint8)
    donor = np.full((64, 64, 3), 200, np.uint8)
    out, mask = cut_paste(image, donor, rng)
    assert mask.any() and not mask.all()
    assert (out[mask] == 200).all() and (out[~mask] == 0).all()


def test_fit_keeps_a_validation_signal_without_test_images(fitted_uniad, synthetic_root):
    detector, run = fitted_uniad
    validation = detector.validation_
    assert validation["n_good"] == validation["n_defect"] >= 2
    # painted defects on these textures are easy: the signal separates them
    assert validation["image_auroc"] > 0.8 and validation["pixel_auroc"] > 0.8
    # computed on the held-out good images only, reproducibly
    held_out = []
    for category in load_root(synthetic_root):
        held_out += validation_split(category.train)[1]
    again = synthetic_validation(detector, held_out, detector.config.seed)
    assert again["image_auroc"] == validation["image_auroc"]
