"""Writing predictions to a folder: ``scores.csv``, a heat-map overlay per image and, for
methods that reconstruct (InTra), an image | reconstruction | map | overlay panel."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from adformer.data.images import list_images, read_image
from adformer.evaluation.visualize import example_grid, overlay

CHUNK = 64  # images predicted at a time: memory stays flat for large folders


@dataclass
class PredictionSummary:
    out: Path
    scored: int = 0
    flagged: int = 0  # above the threshold
    skipped: list[str] = field(default_factory=list)  # unreadable files


def write_predictions(
    detector,
    images: Sequence[str | Path],
    out: str | Path,
    chunk: int = CHUNK,
    progress: bool = False,
) -> PredictionSummary:
    """Predict image files or folders and write the results to `out`. `detector` is a fitted
    detector or a model of an ONNX export (`adformer.deploy.models.open_models`).

    Overlay names keep the folder structure below the inputs' common folder, so
    ``good/000.png`` and ``crack/000.png`` do not overwrite each other.

    >>> write_predictions(adformer.load("runs/uniad"), ["parts/"], "predictions")  # doctest: +SKIP
    PredictionSummary(out=PosixPath('predictions'), scored=12, flagged=1, skipped=[])
    """
    paths = list_images(images)
    base = Path(os.path.commonpath([p.parent for p in paths])) if paths else Path()
    summary = PredictionSummary(Path(out))
    summary.out.mkdir(parents=True, exist_ok=True)
    low, high = detector.map_low_, detector.threshold_
    with open(summary.out / "scores.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "score", "anomalous", "threshold", "overlay", "panel"])
        bar = _progress_bar(len(paths)) if progress else None
        for start in range(0, len(paths), chunk):
            prediction = detector.predict(paths[start : start + chunk], reconstructions=True)
            if bar is not None:
                bar.update(len(paths[start : start + chunk]))
            recons = prediction.reconstructions
            rows = zip(
                prediction.paths,
                prediction.scores,
                prediction.anomalous,
                prediction.maps,
                strict=True,
            )
            for i, (path, score, flag, amap) in enumerate(rows):
                stem = "__".join(Path(path).relative_to(base).with_suffix("").parts)
                image = read_image(path)
                target = summary.out / f"{stem}_overlay.png"
                overlay(image, amap, low, high).save(target)
                panel = ""
                if recons is not None:
                    panel = f"{stem}_panel.png"
                    caption = f"score {score:.4g} (threshold {high:.4g})"
                    grid = example_grid([(image, amap, caption, recons[i])], low, high)
                    grid.save(summary.out / panel)
                writer.writerow(
                    [path, f"{score:.6g}", int(flag), f"{high:.6g}", target.name, panel]
                )
            summary.skipped += prediction.skipped
            summary.scored += len(prediction.scores)
            summary.flagged += int(prediction.anomalous.sum())
    if bar is not None:
        bar.close()
    return summary


def _progress_bar(total: int):
    try:  # tqdm comes with training; the torch-free runtime may not have it
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="image", desc="predict")
