"""Heat-map overlays and example grids (PNG), with no plotting library."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

# anchor colours of a perceptually ordered blue→cyan→yellow→red ramp
_RAMP = np.array(
    [[0, 0, 130], [0, 90, 255], [0, 220, 220], [250, 230, 0], [255, 90, 0], [200, 0, 0]],
    dtype=np.float64,
)


def colourise(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] → (H, W, 3) uint8 heat-map colours."""
    position = np.clip(values, 0, 1) * (len(_RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    frac = (position - low)[..., None]
    return ((1 - frac) * _RAMP[low] + frac * _RAMP[low + 1]).astype(np.uint8)


def heatmap(anomaly_map: np.ndarray, low: float, high: float, size: tuple[int, int]) -> Image.Image:
    """A map as colours, `low` (typical normal) → blue and `high` (the threshold) → red."""
    scaled = (anomaly_map - low) / max(high - low, 1e-12)
    return Image.fromarray(colourise(scaled)).resize(size, Image.BILINEAR)


def overlay(image: Image.Image, anomaly_map: np.ndarray, low: float, high: float) -> Image.Image:
    """The image with its heat map blended on top (at the image's own size)."""
    return Image.blend(image.convert("RGB"), heatmap(anomaly_map, low, high, image.size), 0.5)


def example_grid(
    rows: Sequence[tuple[Image.Image, np.ndarray, str, np.ndarray | None]],
    low: float,
    high: float,
    cell: int = 160,
) -> Image.Image:
    """One row per example: image | [reconstruction] | map | overlay, captioned. The
    reconstruction column appears when the rows carry reconstructions (InTra)."""
    caption = 14
    with_recon = any(row[3] is not None for row in rows)
    columns = 4 if with_recon else 3
    grid = Image.new("RGB", (columns * cell, len(rows) * (cell + caption)), "white")
    draw = ImageDraw.Draw(grid)
    for r, (image, anomaly_map, text, recon) in enumerate(rows):
        image = image.convert("RGB").resize((cell, cell), Image.BILINEAR)
        y = r * (cell + caption)
        tiles = [image]
        if with_recon:
            blank = Image.new("RGB", (cell, cell), "white")
            tiles.append(blank if recon is None else Image.fromarray(recon).resize((cell, cell)))
        tiles += [
            heatmap(anomaly_map, low, high, (cell, cell)),
            overlay(image, anomaly_map, low, high),
        ]
        for c, tile in enumerate(tiles):
            grid.paste(tile, (c * cell, y))
        draw.text((2, y + cell + 1), text, fill="black")
    return grid
