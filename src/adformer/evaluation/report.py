"""The HTML report of `adformer test --report DIR` (and the demo's example grid): per-category
metrics, image-level ROC and PR curves (inline SVG, no plotting library) and the best and
worst examples with their maps — and reconstructions for methods that make them (InTra)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from adformer.data.images import read_image
from adformer.evaluation.evaluate import Evaluation, Scored, table
from adformer.evaluation.visualize import example_grid

CURVE = 220  # px, side of a curve plot


def choose_examples(records: list[Scored], count: int) -> list[tuple[str, list[Scored]]]:
    """Best = confidently right, worst = most wrong, for each label."""
    ranked = sorted(records, key=lambda r: r.score)
    good = [r for r in ranked if r.label == 0]
    bad = [r for r in ranked if r.label == 1]
    return [
        ("best defect", bad[-count:][::-1]),
        ("best good", good[:count]),
        ("worst defect", bad[:count]),
        ("worst good", good[-count:][::-1]),
    ]


def example_image(detector, records: list[Scored], count: int):
    """A grid of the chosen examples: image | [reconstruction] | map | overlay."""
    chosen = [(kind, r) for kind, rs in choose_examples(records, count) for r in rs]
    if not chosen:
        return None
    prediction = detector.predict([r.path for _, r in chosen], reconstructions=True)
    recons = prediction.reconstructions
    rows = []
    for i, ((kind, r), amap) in enumerate(zip(chosen, prediction.maps, strict=True)):
        text = f"{kind} | {r.category} | score {r.score:.3g} (threshold {detector.threshold_:.3g})"
        rows.append((read_image(r.path), amap, text, None if recons is None else recons[i]))
    return example_grid(rows, detector.map_low_, detector.threshold_)


def _svg_curve(x: np.ndarray, y: np.ndarray, title: str, xlabel: str, ylabel: str) -> str:
    side = CURVE - 40
    points = " ".join(
        f"{30 + a * side:.1f},{CURVE - 30 - b * side:.1f}" for a, b in zip(x, y, strict=True)
    )
    return (
        f'<svg width="{CURVE}" height="{CURVE}" xmlns="http://www.w3.org/2000/svg">'
        f'<rect x="30" y="10" width="{CURVE - 40}" height="{CURVE - 40}" fill="none" '
        f'stroke="#999"/><polyline points="{points}" fill="none" stroke="#c00" stroke-width="2"/>'
        f'<text x="{CURVE / 2}" y="{CURVE - 8}" font-size="11" text-anchor="middle">{xlabel}</text>'
        f'<text x="10" y="{CURVE / 2}" font-size="11" transform="rotate(-90 10 {CURVE / 2})" '
        f'text-anchor="middle">{ylabel}</text><title>{html.escape(title)}</title></svg>'
    )


def _curves(records: list[Scored]) -> str:
    labels = np.array([r.label for r in records])
    scores = np.array([r.score for r in records])
    if labels.min() == labels.max():
        return "<p>(one class only: no curves)</p>"
    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    return _svg_curve(fpr, tpr, "ROC", "false positive rate", "true positive rate") + _svg_curve(
        recall, precision, "PR", "recall", "precision"
    )


def write_report(
    directory: str | Path, evaluation: Evaluation, detectors: Mapping[str, object], count: int = 3
) -> Path:
    """Write ``index.html`` (+ one examples PNG per category) into `directory`.

    `detectors` maps each category to the detector that scored it (one for all categories
    with a unified model, one per category for per-category methods).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    metrics = evaluation.metrics
    parts = [
        "<!doctype html><meta charset='utf-8'><title>adformer report</title>",
        "<style>body{font-family:sans-serif;margin:2em}pre{background:#f6f6f6;padding:1em}"
        "svg{margin-right:1em}</style>",
        f"<h1>adformer report: {html.escape(str(metrics.get('method')))}</h1>",
        f"<p>image size {metrics.get('image_size')}, seed {metrics.get('seed')}; pixel metrics "
        f"at {metrics.get('pixel_metrics_resolution')}</p>",
        f"<pre>{html.escape(table(metrics))}</pre>",
    ]
    for name, category_metrics in metrics["per_category"].items():
        records = [r for r in evaluation.records if r.category == name]
        parts.append(f"<h2>{html.escape(name)}</h2>")
        if not records:
            parts.append("<p>no test images</p>")
            continue
        threshold = category_metrics.get("threshold")
        parts.append(f"<p>threshold {threshold:.4g}</p>" if threshold is not None else "")
        parts.append(_curves(records))
        grid = example_image(detectors[name], records, count)
        if grid is not None:
            file = f"examples_{''.join(c if c.isalnum() else '_' for c in name)}.png"
            grid.save(directory / file)
            parts.append(f"<h3>best and worst examples</h3><img src='{file}'>")
    (directory / "index.html").write_text("\n".join(parts))
    return directory / "index.html"
