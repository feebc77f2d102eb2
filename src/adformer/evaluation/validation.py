"""A validation signal that needs no test labels: the held-out good images, and the same
images with synthetic defects — painted ones (scratch, blob, confetti) and cut-paste of a
patch from another good image (CutPaste, arXiv:2104.04015) — scored like a test set.

Configurations are compared on this signal (or on labelled defects a user gives), never on
test images. It is computed at the end of `fit` (few-shot: `adapt`) and kept in the bundle as
``validation_``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from adformer.data.images import read_image
from adformer.data.synthetic import paint_defect
from adformer.data.types import Sample
from adformer.evaluation.metrics import image_metrics, pixel_metrics


def cut_paste(
    image: np.ndarray, donor: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Paste a random rectangle of `donor` (another good image) at a random place of `image`,
    rotated by a multiple of 90° (its content is normal; its place is not)."""
    height, width = image.shape[:2]
    h, w = (rng.uniform(0.08, 0.2, 2) * (height, width)).astype(int).clip(2)
    turns = int(rng.integers(4))
    patch_h, patch_w = (w, h) if turns % 2 else (h, w)
    sy, sx = rng.integers(0, height - patch_h + 1), rng.integers(0, width - patch_w + 1)
    patch = np.rot90(donor[sy : sy + patch_h, sx : sx + patch_w], turns)
    y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
    out, mask = image.copy(), np.zeros((height, width), bool)
    out[y : y + h, x : x + w] = patch
    mask[y : y + h, x : x + w] = True
    return out, mask


def synthetic_validation(
    detector,
    normals: Sequence[Sample],
    seed: int = 0,
    normal_outputs: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict | None:
    """Image and pixel metrics of `detector` on `normals` (held-out good images) against the
    same images with one synthetic defect each (alternately cut-paste and painted). None
    with fewer than 2 images. `normal_outputs`: the normals' (scores, maps) if already
    computed (threshold calibration scores them anyway)."""
    if len(normals) < 2:
        return None
    size = detector.config.image_size
    # a tiled model sees the images at their own size, as it would in use
    full = detector.config.tile is not None
    images = [read_image(s.path) for s in normals]
    good = [np.asarray(i if full else i.resize((size, size), Image.BILINEAR)) for i in images]
    rng = np.random.default_rng([seed, 29])
    bad, masks = [], []
    for i, image in enumerate(good):
        if i % 2 == 0:
            donor = good[(i + 1) % len(good)]
            if donor.shape != image.shape:
                donor = np.asarray(Image.fromarray(donor).resize(image.shape[1::-1]))
            painted, mask = cut_paste(image, donor, rng)
        else:
            painted, mask = paint_defect(image, rng)
        bad.append(painted)
        if mask.shape != (size, size):
            mask = np.asarray(Image.fromarray(mask).resize((size, size), Image.NEAREST))
        masks.append(mask)
    if normal_outputs is None:
        normal = detector.predict(good)
        normal_outputs = normal.scores, normal.maps
    anomalous = detector.predict(bad)
    labels = np.r_[np.zeros(len(good)), np.ones(len(bad))]
    truth = np.concatenate([np.zeros((len(good), size, size), bool), np.stack(masks)])
    metrics = image_metrics(labels, np.r_[normal_outputs[0], anomalous.scores])
    metrics |= pixel_metrics(truth, np.concatenate([normal_outputs[1], anomalous.maps]))
    return metrics | {"n_good": len(good), "n_defect": len(bad)}
