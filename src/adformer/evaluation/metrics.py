"""Image- and pixel-level metrics: AUROC, AP, F1-max, and AUPRO (FPR ≤ 0.3, normalised).

Undefined metrics (one class only, no masks) are ``None``, never a guess; an AUROC below 0.5
is reported as it is, never flipped.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.integrate import trapezoid
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)


def _two_classes(labels: np.ndarray) -> bool:
    return labels.size > 0 and 0 < labels.sum() < labels.size


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    labels = np.asarray(labels).ravel().astype(bool)
    return (
        float(roc_auc_score(labels, np.asarray(scores).ravel())) if _two_classes(labels) else None
    )


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float | None:
    labels = np.asarray(labels).ravel().astype(bool)
    if not _two_classes(labels):
        return None
    return float(average_precision_score(labels, np.asarray(scores).ravel()))


def f1_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F1 at every distinct threshold: (f1, thresholds), both of the thresholds' length
    (a score at or above the threshold counts as anomalous)."""
    precision, recall, thresholds = precision_recall_curve(
        np.asarray(labels).ravel().astype(bool), np.asarray(scores).ravel()
    )
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return f1[:-1], thresholds


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Best F1 over all thresholds (an optimistic, threshold-free summary)."""
    labels = np.asarray(labels).ravel().astype(bool)
    if not _two_classes(labels):
        return None
    return float(f1_curve(labels, scores)[0].max())


def pro_curve(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) at every distinct score threshold, from strict to loose, starting at (0, 0).

    PRO = mean over connected defect regions (8-connectivity, per image) of the fraction of
    the region above the threshold; FPR over all normal pixels.
    """
    masks = np.asarray(masks, dtype=bool)
    maps = np.asarray(maps, dtype=np.float64)
    weights = np.zeros(masks.shape, dtype=np.float64)
    regions = 0
    for i in range(masks.shape[0]):
        labelled, count = ndimage.label(masks[i], structure=np.ones((3, 3)))
        if count:
            sizes = np.bincount(labelled.ravel())
            weights[i] = np.where(labelled > 0, 1.0 / sizes[labelled], 0.0)
            regions += count
    normal = ~masks.ravel()
    if regions == 0 or not normal.any():
        raise ValueError("PRO needs at least one defect region and one normal pixel")
    order = np.argsort(-maps.ravel(), kind="stable")
    sorted_scores = maps.ravel()[order]
    fpr = np.cumsum(normal[order]) / normal.sum()
    pro = np.cumsum(weights.ravel()[order]) / regions
    # keep the last index of each group of equal scores: a threshold admits all of its ties
    last = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    return np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]]


def aupro(masks: np.ndarray, maps: np.ndarray, max_fpr: float = 0.3) -> float | None:
    """Area under the PRO curve up to `max_fpr`, divided by `max_fpr` (1.0 is perfect)."""
    masks = np.asarray(masks, dtype=bool)
    if not masks.any() or masks.all():
        return None
    fpr, pro = pro_curve(masks, maps)
    cut = np.searchsorted(fpr, max_fpr, side="right")
    x, y = fpr[:cut], pro[:cut]
    if cut < fpr.size and x[-1] < max_fpr:  # interpolate the curve at exactly max_fpr
        x0, x1, y0, y1 = fpr[cut - 1], fpr[cut], pro[cut - 1], pro[cut]
        x = np.r_[x, max_fpr]
        y = np.r_[y, y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)]
    return float(trapezoid(y, x) / max_fpr)


def image_metrics(labels: np.ndarray, scores: np.ndarray) -> dict:
    return {
        "image_auroc": auroc(labels, scores),
        "image_ap": average_precision(labels, scores),
        "image_f1_max": f1_max(labels, scores),
    }


def pixel_metrics(masks: np.ndarray, maps: np.ndarray) -> dict:
    return {
        "pixel_auroc": auroc(masks, maps),
        "pixel_ap": average_precision(masks, maps),
        "pixel_f1_max": f1_max(masks, maps),
        "aupro": aupro(masks, maps),
    }


def _thin(x: np.ndarray, y: np.ndarray, points: int) -> list[list[float]]:
    keep = np.unique(np.linspace(0, x.size - 1, min(points, x.size)).round().astype(int))
    return [x[keep].tolist(), y[keep].tolist()]


def pixel_curves(masks: np.ndarray, maps: np.ndarray, points: int = 200, max_fpr: float = 0.3):
    """What a report draws of the pixel level, `points` each: the ROC curve (FPR, TPR) and
    the PRO curve (FPR, PRO) up to `max_fpr`; None without a defect and a normal pixel."""
    masks = np.asarray(masks, dtype=bool)
    if not masks.any() or masks.all():
        return None
    fpr, tpr, _ = roc_curve(masks.ravel(), np.asarray(maps).ravel())
    pro_fpr, pro = pro_curve(masks, maps)
    cut = np.searchsorted(pro_fpr, max_fpr, side="right")
    return {
        "roc": _thin(fpr, tpr, points),
        "pro": _thin(pro_fpr[:cut], pro[:cut], points),
        "max_fpr": max_fpr,
    }
