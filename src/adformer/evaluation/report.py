"""The HTML report of `adformer test --report DIR` (and the demo's example grid): per-category
metrics, image-level ROC and PR curves, pixel-level ROC and PRO curves (with masks), score
histograms with the threshold (inline SVG with axis values, no plotting library), a
per-defect-type table, the best and worst examples with their maps (and reconstructions for
methods that make them, InTra), scoring time, and each model's configuration, seed and
training (best epoch, epochs run, seconds)."""

from __future__ import annotations

import dataclasses
import html
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from adformer.data.images import read_image, write_png
from adformer.evaluation.evaluate import Evaluation, Scored, table
from adformer.evaluation.metrics import auroc
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


def _svg(body: str, title: str) -> str:
    return (
        f'<svg width="{CURVE}" height="{CURVE}" xmlns="http://www.w3.org/2000/svg" '
        f'font-size="10"><title>{html.escape(title)}</title>{body}</svg>'
    )


def _axes(xlabel: str, ylabel: str, xticks: list[str], yticks: list[str]) -> str:
    """The plot frame (x 30…CURVE−10, y 10…CURVE−30), tick values and axis labels."""
    side, parts = CURVE - 40, []
    parts.append(f'<rect x="30" y="10" width="{side}" height="{side}" fill="none" stroke="#999"/>')
    for i, text in enumerate(xticks):
        x = 30 + side * i / max(len(xticks) - 1, 1)
        parts.append(f'<text x="{x:.0f}" y="{CURVE - 18}" text-anchor="middle">{text}</text>')
    for i, text in enumerate(yticks):
        y = CURVE - 30 - side * i / max(len(yticks) - 1, 1)
        parts.append(f'<text x="27" y="{y + 3:.0f}" text-anchor="end">{text}</text>')
    parts.append(
        f'<text x="{CURVE / 2 + 10}" y="{CURVE - 4}" text-anchor="middle">{xlabel}</text>'
        f'<text x="8" y="{CURVE / 2}" transform="rotate(-90 8 {CURVE / 2})" '
        f'text-anchor="middle">{ylabel}</text>'
    )
    return "".join(parts)


def _svg_curve(x, y, title: str, xlabel: str, ylabel: str, x_max: float = 1.0) -> str:
    """A curve in [0, x_max] × [0, 1]."""
    side = CURVE - 40
    points = " ".join(
        f"{30 + a / x_max * side:.1f},{CURVE - 30 - b * side:.1f}"
        for a, b in zip(x, y, strict=True)
    )
    xticks = ["0", f"{x_max / 2:g}", f"{x_max:g}"]
    line = f'<polyline points="{points}" fill="none" stroke="#c00" stroke-width="2"/>'
    label = f'<text x="{CURVE - 14}" y="24" text-anchor="end">{html.escape(title)}</text>'
    return _svg(_axes(xlabel, ylabel, xticks, ["0", "0.5", "1"]) + line + label, title)


def _histogram(records: list[Scored], threshold: float | None, bins: int = 24) -> str:
    """Scores of good (green) and defective (red) test images, as densities, with the
    threshold (black line)."""
    scores = np.array([r.score for r in records])
    values = [*scores, *([threshold] if threshold is not None else [])]
    low, high = float(np.min(values)), float(np.max(values))
    edges = np.linspace(low, high if high > low else low + 1, bins + 1)
    side, body = CURVE - 40, []
    counts = {
        label: np.histogram([r.score for r in records if r.label == label], edges)[0]
        for label in (0, 1)
    }
    top = max(max(c.max() / max(c.sum(), 1) for c in counts.values()), 1e-9)
    width = side / bins
    for label, colour in ((0, "#2a9d4b"), (1, "#c00")):
        density = counts[label] / max(counts[label].sum(), 1) / top
        for i, d in enumerate(density):
            h = d * side
            body.append(
                f'<rect x="{30 + i * width:.1f}" y="{CURVE - 30 - h:.1f}" width="{width:.1f}" '
                f'height="{h:.1f}" fill="{colour}" fill-opacity="0.45"/>'
            )
    if threshold is not None:
        x = 30 + (threshold - edges[0]) / (edges[-1] - edges[0]) * side
        body.append(f'<line x1="{x:.1f}" y1="10" x2="{x:.1f}" y2="{CURVE - 30}" stroke="#000"/>')
    ticks = [f"{edges[0]:.3g}", f"{(edges[0] + edges[-1]) / 2:.3g}", f"{edges[-1]:.3g}"]
    axes = _axes("image score", "share of images", ticks, ["0", "", "max"])
    return _svg(axes + "".join(body), "scores: good (green), defective (red), threshold (line)")


def _curves(records: list[Scored], pixel: dict | None) -> str:
    """Image ROC and PR; with masks, pixel ROC and PRO (up to its FPR limit)."""
    labels = np.array([r.label for r in records])
    scores = np.array([r.score for r in records])
    if labels.min() == labels.max():
        return "<p>(one class only: no curves)</p>"
    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    parts = [
        _svg_curve(fpr, tpr, "image ROC", "false positive rate", "true positive rate"),
        _svg_curve(recall, precision, "image PR", "recall", "precision"),
    ]
    if pixel is not None:
        fpr_axis = "false positive rate (pixels)"
        parts.append(_svg_curve(*pixel["roc"], "pixel ROC", fpr_axis, "true positive rate"))
        limit = pixel["max_fpr"]
        parts.append(_svg_curve(*pixel["pro"], "PRO", fpr_axis, "per-region overlap", limit))
    return "".join(parts)


def _defect_table(records: list[Scored]) -> str:
    """Per defect type: images and AUROC against the good test images."""
    good = [r.score for r in records if r.label == 0]
    rows = ["<table><tr><th>defect</th><th>images</th><th>image AUROC vs good</th></tr>"]
    for defect in sorted({r.defect for r in records if r.label == 1}):
        bad = [r.score for r in records if r.label == 1 and r.defect == defect]
        value = auroc(np.r_[np.zeros(len(good)), np.ones(len(bad))], np.r_[good, bad])
        shown = "–" if value is None else f"{value:.3f}"
        rows.append(f"<tr><td>{html.escape(defect)}</td><td>{len(bad)}</td><td>{shown}</td></tr>")
    return "".join(rows) + "</table>"


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
        "svg{margin-right:1em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:2px 8px}</style>",
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
        threshold, seconds = category_metrics.get("threshold"), category_metrics.get("seconds")
        facts = [f"threshold {threshold:.4g}"] if threshold is not None else []
        if seconds:
            facts.append(f"{len(records)} images scored in {seconds:.1f} s")
            facts.append(f"{len(records) / seconds:.1f} images/s")
        parts.append(f"<p>{', '.join(facts)}</p>")
        curves = _curves(records, evaluation.curves.get(name))
        parts.append(f"<div>{curves}{_histogram(records, threshold)}</div>")
        parts.append(_defect_table(records))
        grid = example_image(detectors[name], records, count)
        if grid is not None:
            file = f"examples_{''.join(c if c.isalnum() else '_' for c in name)}.png"
            write_png(grid, directory / file)
            parts.append(f"<h3>best and worst examples</h3><img src='{file}'>")
    parts.append("<h2>models</h2>")
    for detector in {id(d): d for d in detectors.values()}.values():
        described = {"method": detector.name, "categories": detector.categories_}
        described |= {"threshold": detector.threshold_, "source": detector.threshold_source_}
        described |= {"config": dataclasses.asdict(detector.config)}
        if detector.training_ is not None:  # best epoch, epochs run, training seconds
            described |= {"training": detector.training_}
        parts.append(f"<pre>{html.escape(json.dumps(described, indent=1, default=str))}</pre>")
    (directory / "index.html").write_text("\n".join(parts))
    return directory / "index.html"


PALETTE = ("#1f5fa8", "#2a9d4b", "#c77c02", "#8e3aa8", "#c00", "#17a2b8")
PEER_PALETTE = ("#777", "#aaa", "#555", "#ccc")


def _bar_chart(
    stats: dict, categories: list[str], models: list[str], peers: list[str], key: str, title: str
):
    """Grouped bars (one group per category and the mean, one bar per model) of the mean
    over seeds, with ± one standard deviation as whiskers; peers in greys."""
    height, bar, gap, left = 240, 14, 18, 40
    groups = [*categories, "mean"]
    width = left + max(len(groups) * (len(models) * bar + gap), min(len(models), 6) * 110) + 10
    summary = {(m, c): stats.get((m, c), {}).get(key) or [] for m in models for c in groups}
    lows = [np.mean(v) - np.std(v) for v in summary.values() if v]
    if not lows:
        return f"<p>{html.escape(title)}: no values</p>"
    low = max(0.0, np.floor(min(lows) * 10) / 10)
    if low >= 1.0:
        low = 0.9
    plot = height - 60

    def y(value: float) -> float:
        return 10 + plot * (1 - (value - low) / (1 - low))

    colours, ours, theirs = {}, iter(PALETTE), iter(PEER_PALETTE)
    for m in models:
        colours[m] = next(theirs, "#999") if m in peers else next(ours, "#333")
    parts = [f'<line x1="{left}" y1="{y(1):.1f}" x2="{width - 10}" y2="{y(1):.1f}" stroke="#ddd"/>']
    for tick in np.linspace(low, 1.0, 3):
        parts.append(
            f'<text x="{left - 4}" y="{y(tick) + 3:.1f}" text-anchor="end">{tick:.2f}</text>'
        )
    for g, group in enumerate(groups):
        x0 = left + g * (len(models) * bar + gap) + gap / 2
        for i, model in enumerate(models):
            values = summary[(model, group)]
            if not values:
                continue
            mean, std, x = float(np.mean(values)), float(np.std(values)), x0 + i * bar
            top = y(max(mean, low))
            parts.append(
                f'<rect x="{x:.1f}" y="{top:.1f}" width="{bar - 2}" height="{y(low) - top:.1f}" '
                f'fill="{colours[model]}"><title>{html.escape(model)} on '
                f"{html.escape(group)}: {mean:.3f} ± {std:.3f}</title></rect>"
            )
            if std > 0:
                cx = x + (bar - 2) / 2
                parts.append(
                    f'<line x1="{cx:.1f}" y1="{y(min(mean + std, 1)):.1f}" x2="{cx:.1f}" '
                    f'y2="{y(max(mean - std, low)):.1f}" stroke="#000"/>'
                )
        middle, label = x0 + len(models) * bar / 2, html.escape(group)
        parts.append(
            f'<text x="{middle:.1f}" y="{height - 36}" text-anchor="middle">{label}</text>'
        )
    for i, model in enumerate(models):
        x = left + (i % 6) * 110
        yy = height - 20 + (i // 6) * 12
        parts.append(
            f'<rect x="{x}" y="{yy - 8}" width="9" height="9" fill="{colours[model]}"/>'
            f'<text x="{x + 13}" y="{yy}">{html.escape(model)}</text>'
        )
    return (
        f'<svg width="{width}" height="{height + 12 * ((len(models) - 1) // 6)}" '
        f'xmlns="http://www.w3.org/2000/svg" font-size="10"><title>{html.escape(title)}</title>'
        + "".join(parts)
        + "</svg>"
    )


def _markdown_tables(text: str) -> str:
    """The benchmark's markdown (paragraphs and pipe tables) as HTML."""
    out, rows = [], []

    def flush():
        if rows:
            head, *body = rows
            cells = "".join(f"<th>{html.escape(c)}</th>" for c in head)
            lines = [f"<tr>{cells}</tr>"]
            for row in body:
                lines.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
            out.append("<table>" + "".join(lines) + "</table>")
            rows.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= set("-:") for c in cells):
                rows.append(cells)
        else:
            flush()
            if line.strip():
                out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(out)


def benchmark_page(
    stats: dict,
    categories: list[str],
    models: list[str],
    peers: list[str],
    markdown: str,
    settings: dict,
) -> str:
    """``results.html`` of `adformer benchmark`: image and pixel AUROC of every model (methods
    and peers) per category as bar charts (mean ± std over seeds), then the tables of
    ``results.md`` and the grid's settings. `stats` maps (model, category) to each metric's
    values over seeds; `peers` (drawn in greys) are among `models`."""
    charts = [
        _bar_chart(stats, categories, models, peers, key, title)
        for key, title in (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"))
    ]
    return "\n".join(
        [
            "<!doctype html><meta charset='utf-8'><title>adformer benchmark</title>",
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
            "margin:1em 0}td,th{border:1px solid #ccc;padding:2px 8px}pre{background:#f6f6f6;"
            "padding:1em}</style>",
            "<h1>adformer benchmark</h1>",
            "<h2>image AUROC</h2>",
            charts[0],
            "<h2>pixel AUROC</h2>",
            charts[1],
            "<h2>tables</h2>",
            _markdown_tables(markdown),
            "<h2>settings</h2>",
            f"<pre>{html.escape(json.dumps(settings, indent=1))}</pre>",
        ]
    )
