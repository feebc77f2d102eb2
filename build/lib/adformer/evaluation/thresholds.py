"""Decision thresholds, calibrated without test images: a high quantile of validation normal
scores (no anomalies needed), or the F1-optimal threshold when labelled validation anomalies
exist. Every method's threshold comes from here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adformer.evaluation.metrics import f1_curve


@dataclass(frozen=True)
class Threshold:
    """A score above `value` is anomalous; `source` says how the value was chosen."""

    value: float
    source: str


def quantile_threshold(normal_scores: np.ndarray, quantile: float, what: str = "") -> Threshold:
    """The `quantile` of normal scores (0.99: about 1 % of good parts flagged).

    >>> quantile_threshold(np.arange(101.0), 0.99).value
    99.0
    """
    scores = np.asarray(normal_scores, dtype=np.float64).ravel()
    what = what or f"{len(scores)} validation normal scores"
    return Threshold(float(np.quantile(scores, quantile)), f"quantile {quantile} of {what}")


def f1_threshold(normal_scores: np.ndarray, anomaly_scores: np.ndarray) -> Threshold:
    """The threshold of best F1 on validation normals and validation anomalies. The value is
    the highest validation score below the best cut, so `score > value` reproduces it."""
    normal = np.asarray(normal_scores, dtype=np.float64).ravel()
    bad = np.asarray(anomaly_scores, dtype=np.float64).ravel()
    labels = np.r_[np.zeros(len(normal)), np.ones(len(bad))]
    scores = np.r_[normal, bad]
    f1, cuts = f1_curve(labels, scores)
    best = int(np.argmax(f1))
    below = scores[scores < cuts[best]]
    value = float(below.max()) if below.size else float(np.nextafter(cuts[best], -np.inf))
    return Threshold(
        value,
        f"F1-optimal (F1 {f1[best]:.3f}) on {len(normal)} validation normals and "
        f"{len(bad)} validation anomalies",
    )
