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
    rows: Sequence[tuple[Image.Image, np.ndarray, str]],
    low: float,
    high: float,
    cell: int = 160,
) -> Image.Image:
    """One row per example: image | map | overlay, with a caption under each row."""
    caption = 14
    grid = Image.new("RGB", (3 * cell, len(rows) * (cell + caption)), "white")
    draw = ImageDraw.Draw(grid)
    for r, (image, anomaly_map, text) in enumerate(rows):
        image = image.convert("RGB").resize((cell, cell), Image.BILINEAR)
        y = r * (cell + caption)
        grid.paste(image, (0, y))
        grid.paste(heatmap(anomaly_map, low, high, (cell, cell)), (cell, y))
        grid.paste(overlay(image, anomaly_map, low, high), (2 * cell, y))
        draw.text((2, y + cell + 1), text, fill="black")
    return grid
