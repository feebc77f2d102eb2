"""Run a fitted detector over test categories and compute the metrics of the JSON contract."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adformer.data.types import CategoryData
from adformer.evaluation.metrics import image_metrics, pixel_curves, pixel_metrics

KEYS = (
    "image_auroc",
    "image_ap",
    "image_f1_max",
    "pixel_auroc",
    "pixel_ap",
    "pixel_f1_max",
    "aupro",
)


@dataclass
class Scored:
    """One test image's outcome (maps are not kept: re-predict the few you want to show)."""

    path: str
    category: str
    label: int
    score: float
    defect: str = "good"  # MVTec's test/<defect> folder


@dataclass
class Evaluation:
    metrics: dict
    records: list[Scored] = field(default_factory=list)
    curves: dict[str, dict] = field(default_factory=dict)  # per category: `pixel_curves`


def _mean(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def evaluate(detector, categories: list[CategoryData]) -> Evaluation:
    """Per-category metrics and their mean (the MVTec AD convention).

    Pixel metrics are computed at the detector's input resolution (``image_size`` square,
    masks resized nearest), stated in the result as ``pixel_metrics_resolution``.
    """
    per_category: dict[str, dict] = {}
    records: list[Scored] = []
    curves: dict[str, dict] = {}
    for category in categories:
        if not category.test:
            per_category[category.name] = {k: None for k in KEYS} | {"n_good": 0, "n_defect": 0}
            continue
        scores, labels, maps, masks = [], [], [], []
        defects = {str(sample.path): sample.defect for sample in category.test}
        began = time.perf_counter()
        for scored in detector.score_samples(category.test, skip_unreadable=False):
            batch, s, m = scored.batch, scored.scores, scored.maps
            scores.append(s)
            labels.append(batch.labels.numpy())
            if category.has_masks:
                maps.append(m.astype(np.float32))
                masks.append(batch.masks.numpy())
            records += [
                Scored(p, category.name, int(y), float(v), defects[p])
                for p, y, v in zip(batch.paths, batch.labels.tolist(), s, strict=True)
            ]
        seconds = time.perf_counter() - began  # decoding and scoring, not the metrics
        score_array, label_array = np.concatenate(scores), np.concatenate(labels)
        result = image_metrics(label_array, score_array)
        if category.has_masks:
            mask_array, map_array = np.concatenate(masks), np.concatenate(maps)
            result |= pixel_metrics(mask_array, map_array)
            found = pixel_curves(mask_array, map_array)
            if found is not None:
                curves[category.name] = found
        else:
            result |= {k: None for k in ("pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro")}
        result["n_good"] = int((label_array == 0).sum())
        result["n_defect"] = int((label_array == 1).sum())
        result["seconds"] = seconds
        result["threshold"] = detector.threshold_
        result["trained_on"] = detector.categories_
        per_category[category.name] = result
    metrics = {
        "per_category": per_category,
        "method": detector.name,
        "seed": detector.config.seed,
        "image_size": detector.config.image_size,
        "pixel_metrics_resolution": [detector.config.image_size] * 2,
    }
    return Evaluation(with_means(metrics), records, curves)


def with_means(metrics: dict) -> dict:
    """`metrics` with the mean over its ``per_category`` of each metric in `KEYS` (None ones
    skipped) beside them, replacing any it had (a merged result carries its first part's)."""
    per_category = metrics["per_category"]
    return metrics | {k: _mean([r[k] for r in per_category.values()]) for k in KEYS}


def merge(evaluations: list[Evaluation]) -> Evaluation:
    """One result from per-category models (each evaluated on its own category)."""
    first = evaluations[0].metrics
    per_category = {n: r for e in evaluations for n, r in e.metrics["per_category"].items()}
    records = [r for e in evaluations for r in e.records]
    curves = {n: c for e in evaluations for n, c in e.curves.items()}
    return Evaluation(with_means({**first, "per_category": per_category}), records, curves)


def average(evaluations: list[Evaluation]) -> dict:
    """Metrics averaged over repeated evaluations (few-shot rounds), with ``<key>_std``."""
    first = evaluations[0].metrics

    def mean_std(dicts: list[dict]) -> dict:
        out = {}
        for key in KEYS:
            values = [d[key] for d in dicts if d.get(key) is not None]
            out[key] = float(np.mean(values)) if values else None
            out[f"{key}_std"] = float(np.std(values)) if values else None
        return out

    per_category = {
        name: {
            **first["per_category"][name],
            **mean_std([e.metrics["per_category"][name] for e in evaluations]),
        }
        for name in first["per_category"]
    }
    metrics = {**first, **mean_std([e.metrics for e in evaluations])}
    return metrics | {"per_category": per_category}


def table(metrics: dict) -> str:
    """A per-category text table of the main metrics, with the mean last."""
    columns = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "n_good", "n_defect")
    rows = [(name, r) for name, r in metrics["per_category"].items()] + [("mean", metrics)]
    width = max(len(name) for name, _ in rows) + 2

    def cell(value) -> str:
        if value is None:
            return "-".rjust(14)
        return (f"{value:.3f}" if isinstance(value, float) else str(value)).rjust(14)

    lines = ["category".ljust(width) + "".join(c.rjust(14) for c in columns)]
    for name, r in rows:
        lines.append(name.ljust(width) + "".join(cell(r.get(c)) for c in columns))
    return "\n".join(lines)


def save_metrics(metrics: dict, path: str | Path) -> Path:
    """Write the metrics JSON (the contract of `adformer test --json`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2))
    return path
