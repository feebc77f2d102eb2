"""A validation signal that needs no test labels: the held-out good images, and the same
images with synthetic defects — painted ones (scratch, blob, confetti) and cut-paste of a
patch from another good image (CutPaste, arXiv:2104.04015) — scored like a test set.

Opaque defects are found almost perfectly whatever the configuration (image AUROC 0.97–1.00
on ELPV while real cracks score 0.79–0.88), so a signal made only of them cannot rank
configurations. Each held-out image therefore carries `VARIANTS` defects of graded
difficulty: each is blended into the image with an opacity drawn from `OPACITY` (a
quarter-opaque paste of normal texture is hard to see), alternating painted and cut-paste.

Configurations are compared on this signal (or on labelled defects a user gives:
`labelled_metrics`, kept under ``validation_["labelled"]``), never on test images. It is
computed at the end of `fit` and kept in the bundle as ``validation_``; a few-shot fit
computes it on its training categories (`few_shot.training_validation`), and `adapt` again
on the new category's other good images when it is given some; with only the support images,
`few_shot.support_validation` holds each out in turn.
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


VARIANTS = 4  # synthetic defects per held-out good image, each scored as its own image
OPACITY = (0.25, 1.0)  # range of a defect's opacity over the image
# where the defects go (the option `validation_defects`): "anywhere" on the image, or "part":
# at least half of each on the part, not on a plain background around it (`on_part`). On
# objects lying on a plain background, defects painted on the background reward maps that are
# sensitive there, which real defects on the part do not (docs/benchmarks.md, hazelnut_toy)
DEFECT_PLACES = ("anywhere", "part")
BACKGROUND_TOLERANCE = 40.0  # colour distance (0–255, over RGB) within which a pixel is background
PLACEMENT_TRIES = 20  # draws of a defect before one that misses the part is kept anyway


def mostly_on(mask: np.ndarray, part: np.ndarray) -> bool:
    """Whether at least half of a defect's `mask` lies on `part` (both bool, one size)."""
    return 2 * int((mask & part).sum()) >= int(mask.sum())


def on_part(image: np.ndarray, tolerance: float = BACKGROUND_TOLERANCE) -> np.ndarray:
    """(H, W) bool: the pixels of an (H, W, 3) image farther in colour than `tolerance` from the
    median colour of its border — the part, where it lies on a plain background. A part that
    fills the frame (a texture, a solar cell) is most of the image, and a texture whose border
    shows mostly one colour (dots on a plain ground) loses that colour: use "part" only for
    objects on a plain background."""
    pixels = image.astype(np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return np.linalg.norm(pixels - np.median(border, axis=0), axis=-1) > tolerance


def blend(image: np.ndarray, defective: np.ndarray, mask: np.ndarray, opacity: float) -> np.ndarray:
    """`image` with `defective`'s pixels under `mask` mixed in at `opacity` (1: pasted as is)."""
    out = image.astype(np.float32)
    out[mask] += opacity * (defective[mask].astype(np.float32) - out[mask])
    return out.round().clip(0, 255).astype(np.uint8)


def synthetic_validation(
    detector,
    normals: Sequence[Sample],
    seed: int = 0,
    normal_outputs: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict | None:
    """Image and pixel metrics of `detector` on `normals` (held-out good images) against
    `VARIANTS` copies of them, each with one synthetic defect (painted or cut-paste, at a
    random opacity in `OPACITY`). None with fewer than 2 images. `normal_outputs`: the
    normals' (scores, maps) if already computed (threshold calibration scores them anyway).
    The defects depend only on `seed` and the images, so configurations fitted on the same
    split are compared on the same defects."""
    if len(normals) < 2:
        return None
    return validation_metrics([synthetic_outputs(detector, normals, seed, normal_outputs)])


def synthetic_outputs(
    detector,
    normals: Sequence[Sample],
    seed: int = 0,
    normal_outputs: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What `synthetic_validation` measures, before the metrics: labels (N,), scores (N,),
    true masks (N, S, S) and maps (N, S, S) of `normals` and their defective copies (with one
    image, a cut-paste takes its patch from the image itself)."""
    size = detector.config.image_size
    # a tiled model sees the images at their own size, as it would in use
    full = detector.config.tile is not None
    images = [read_image(s.path) for s in normals]
    good = [np.asarray(i if full else i.resize((size, size), Image.BILINEAR)) for i in images]
    if normal_outputs is None:
        normal = detector.predict(good)
        normal_outputs = normal.scores, normal.maps
    rng = np.random.default_rng([seed, 29])
    parts = [on_part(g) for g in good] if detector.config.validation_defects == "part" else None
    scores, maps, masks = [normal_outputs[0]], [normal_outputs[1]], []
    for variant in range(VARIANTS):  # one variant at a time: large tiled images stay few
        bad = []
        for i in range(len(good)):
            defective, mask = _defect(good, i, variant, rng, None if parts is None else parts[i])
            bad.append(defective)
            if mask.shape != (size, size):
                mask = np.asarray(Image.fromarray(mask).resize((size, size), Image.NEAREST))
            masks.append(mask)
        anomalous = detector.predict(bad)
        scores.append(anomalous.scores)
        maps.append(anomalous.maps)
    labels = np.r_[np.zeros(len(good)), np.ones(len(masks))]
    truth = np.concatenate([np.zeros((len(good), size, size), bool), np.stack(masks)])
    return labels, np.concatenate(scores), truth, np.concatenate(maps)


def validation_metrics(outputs: Sequence[tuple]) -> dict:
    """Image and pixel metrics of `synthetic_outputs` results, pooled."""
    labels, scores, truth, maps = (np.concatenate(part) for part in zip(*outputs, strict=True))
    metrics = image_metrics(labels, scores) | pixel_metrics(truth, maps)
    return metrics | {"n_good": int((labels == 0).sum()), "n_defect": int(labels.sum())}


def labelled_metrics(normal: tuple[np.ndarray, np.ndarray], defects: Sequence) -> dict:
    """The validation on labelled defects a user gives: image metrics of the held-out good
    images (`normal`: their scores and maps) against the defects (`ScoredBatch`es), and pixel
    metrics too when every defect has a mask of its map's size and the good images' (tiled
    maps keep each image's own size)."""
    scores = np.concatenate([d.scores for d in defects])
    labels = np.r_[np.zeros(len(normal[0]), int), np.ones(len(scores), int)]
    metrics = image_metrics(labels, np.r_[normal[0], scores])
    size = normal[1].shape[1:]
    if all(
        d.batch.has_mask.all() and d.maps.shape[1:] == d.batch.masks.shape[1:] == size
        for d in defects
    ):
        masks = [np.zeros(normal[1].shape, bool), *(d.batch.masks.numpy() for d in defects)]
        maps = np.concatenate([normal[1], *(d.maps for d in defects)])
        metrics |= pixel_metrics(np.concatenate(masks), maps)
    return metrics | {"n_good": len(normal[0]), "n_defect": len(scores)}


def _defect(
    good: list[np.ndarray],
    i: int,
    variant: int,
    rng: np.random.Generator,
    part: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Image `i` of `good` with one defect (cut-paste from a neighbour or painted, alternating
    over images and variants) at a random opacity, and the defect's mask; with `part` (bool,
    the image's size), drawn again until at least half of it lies there (`PLACEMENT_TRIES`)."""
    image, donor = good[i], None
    if (i + variant) % 2 == 0:
        donor = good[(i + 1 + variant) % len(good)]
        if donor.shape != image.shape:
            donor = np.asarray(Image.fromarray(donor).resize(image.shape[1::-1]))
    for _ in range(PLACEMENT_TRIES if part is not None else 1):
        if donor is not None:
            defective, mask = cut_paste(image, donor, rng)
        else:
            defective, mask = paint_defect(image, rng)
        if part is None or mostly_on(mask, part):
            break
    return blend(image, defective, mask, rng.uniform(*OPACITY)), mask
