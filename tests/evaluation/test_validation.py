from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import adformer
from adformer.data import load_root
from adformer.data.folders import validation_split
from adformer.data.types import Sample
from adformer.errors import AdformerError
from adformer.evaluation import validation as validation_module
from adformer.evaluation.validation import (
    VARIANTS,
    blend,
    cut_paste,
    on_part,
    synthetic_outputs,
    synthetic_validation,
)


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


YELLOW, BROWN = (215, 200, 70), (120, 80, 40)


def _objects_on_a_plain_background(tmp_path, count=6, size=64) -> tuple[list, list]:
    """Brown squares (a quarter of the image) at random places on a plain yellow background,
    as files, and where each square is."""
    rng = np.random.default_rng(0)
    samples, squares = [], []
    for i in range(count):
        image = np.empty((size, size, 3), np.uint8)
        image[:] = YELLOW
        y, x = rng.integers(4, size // 2 - 4, 2)
        image[y : y + size // 2, x : x + size // 2] = BROWN
        square = np.zeros((size, size), bool)
        square[y : y + size // 2, x : x + size // 2] = True
        Image.fromarray(image).save(tmp_path / f"{i}.png")
        samples.append(Sample(tmp_path / f"{i}.png", "object"))
        squares.append(square)
    return samples, squares


class _Blind:
    """A fitted detector's stand-in that scores every image 0: only where the validation puts
    its defects is looked at."""

    def __init__(self, size: int, place: str):
        self.config = SimpleNamespace(image_size=size, tile=None, validation_defects=place)

    def predict(self, images):
        n, size = len(images), self.config.image_size
        return SimpleNamespace(scores=np.zeros(n), maps=np.zeros((n, size, size), np.float32))


def test_on_part_finds_an_object_on_a_plain_background(tmp_path):
    samples, squares = _objects_on_a_plain_background(tmp_path)
    for sample, square in zip(samples, squares, strict=True):
        assert (on_part(np.asarray(Image.open(sample.path))) == square).all()


def test_validation_defects_on_the_part_lie_mostly_on_it(tmp_path):
    samples, squares = _objects_on_a_plain_background(tmp_path)
    shares = {}
    for place in ("anywhere", "part"):
        labels, _, truth, _ = synthetic_outputs(_Blind(64, place), samples, seed=0)
        defects = truth[labels == 1]
        assert len(defects) == VARIANTS * len(samples) and all(m.any() for m in defects)
        on = [squares[k % len(samples)] for k in range(len(defects))]  # image by image
        shares[place] = np.array(
            [(m & p).sum() / m.sum() for m, p in zip(defects, on, strict=True)]
        )
    assert (shares["part"] >= 0.5).all()
    assert (shares["anywhere"] < 0.5).mean() > 0.25  # a quarter of the image: most miss it


def test_calibrate_paints_the_validation_defects_where_asked(fitted_uniad, synthetic_root):
    detector, _ = fitted_uniad
    before = detector.validation_
    try:  # no training: `calibrate` takes it
        detector.calibrate(synthetic_root, validation_defects="part")
        assert detector.config.validation_defects == "part"
        assert detector.validation_["n_defect"] == before["n_defect"]  # as many, elsewhere
        assert detector.validation_["pixel_auroc"] != before["pixel_auroc"]
    finally:
        detector.calibrate(synthetic_root, validation_defects="anywhere")
    assert detector.validation_["pixel_auroc"] == pytest.approx(before["pixel_auroc"], rel=1e-6)
    with pytest.raises(AdformerError, match="validation_defects must be one of"):
        adformer.create("uniad", preset="tiny", validation_defects="background")
