"""Writing predictions to a folder: ``scores.csv``, a heat-map overlay per image and, for
methods that reconstruct (InTra), an image | reconstruction | map | overlay panel."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from adformer import distributed
from adformer.data.images import list_images, read_image, write_png
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
    # under torchrun each process scores a contiguous slice; rank 0 writes the one CSV
    mine = paths[distributed.shard(len(paths))]
    rows, skipped = [], []
    bar = _progress_bar(len(mine)) if progress and distributed.is_main() else None
    for start in range(0, len(mine), chunk):
        prediction = detector.predict(mine[start : start + chunk], reconstructions=True)
        rows += _write_images(prediction, detector, base, summary.out)
        skipped += prediction.skipped
        if bar is not None:
            bar.update(len(mine[start : start + chunk]))
    if bar is not None:
        bar.close()
    parts = distributed.gather((rows, skipped))
    summary.skipped = [path for _, part in parts for path in part]
    rows = [row for part, _ in parts for row in part]
    summary.scored, summary.flagged = len(rows), sum(row[2] for row in rows)
    if distributed.is_main():
        # surrogateescape: a file name that is not valid UTF-8 is written back byte for byte
        csv_path = summary.out / "scores.csv"
        with open(csv_path, "w", newline="", errors="surrogateescape") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "score", "anomalous", "threshold", "overlay", "panel"])
            writer.writerows(rows)
    distributed.barrier()
    return summary


def _write_images(prediction, detector, base: Path, out: Path) -> list[list]:
    """Overlays (and InTra's panels) of one chunk; its CSV rows."""
    low, high = detector.map_low_, detector.threshold_
    recons = prediction.reconstructions
    rows = []
    for i, (path, score, flag, amap) in enumerate(
        zip(prediction.paths, prediction.scores, prediction.anomalous, prediction.maps, strict=True)
    ):
        stem = "__".join(Path(path).relative_to(base).with_suffix("").parts)
        image = read_image(path)
        target = out / f"{stem}_overlay.png"
        write_png(overlay(image, amap, low, high), target)
        panel = ""
        if recons is not None:
            panel = f"{stem}_panel.png"
            caption = f"score {score:.4g} (threshold {high:.4g})"
            write_png(example_grid([(image, amap, caption, recons[i])], low, high), out / panel)
        rows.append([path, f"{score:.6g}", int(flag), f"{high:.6g}", target.name, panel])
    return rows


def _progress_bar(total: int):
    try:  # tqdm comes with training; the torch-free runtime may not have it
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="image", desc="predict")
