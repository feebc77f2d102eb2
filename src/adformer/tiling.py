"""Large images by tiling, shared by the PyTorch detector and the torch-free ONNX runtime
(NumPy and Pillow only).

With ``tile=T`` a model sees an image as T×T-pixel tiles, each resized to its input size S
(no resize when T = S): it is trained on the tiles of good images (side by side, no
overlap) and scores an image tile by tile, ``overlap`` pixels shared between neighbours.
The tiles' maps are stitched at the model's own scale (S/T of the image) with linear
blending across each overlap, the image score is taken from the stitched map as without
tiling (the method's pooled maximum), and the map returned has the model's S×S size, each
pixel the maximum of the stitched map over its cell, so a defect the score saw stays
visible. The model's memory does not grow with the image: tiles are run a batch at a time;
only the decoded image (3 bytes per pixel) and the stitched map (4 bytes per pixel at
T = S) do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
from PIL import Image

from adformer.data.folders import check_mask_size, raise_problems
from adformer.data.images import image_size, image_to_array, read_mask
from adformer.data.types import Sample
from adformer.errors import AdformerError

Box = tuple[int, int, int, int]  # left, top, right, bottom in image pixels
MIN_TILE = 16


def updated_tiling(
    current: tuple[int | None, int], tile: int | None, overlap: int | None
) -> tuple[int | None, int]:
    """`set_tiling`'s arguments applied to the (tile, overlap) in use: None keeps a value,
    a tile of 0 means whole images; the result is checked."""
    tile = current[0] if tile is None else tile or None
    overlap = current[1] if overlap is None else overlap
    check_tiling(tile, overlap)
    return tile, overlap


def check_tiling(tile: int | None, overlap: int) -> None:
    if tile is None:
        return
    if tile < MIN_TILE:
        raise AdformerError(f"tile must be at least {MIN_TILE} pixels, got {tile}")
    if not 0 <= overlap < tile:
        raise AdformerError(f"tile_overlap must be in [0, tile={tile}), got {overlap}")


def tile_boxes(width: int, height: int, tile: int, overlap: int = 0) -> list[Box]:
    """Tiles covering the image row by row, `overlap` pixels shared by neighbours (more where
    the last tile of a row or column is moved back to end at the border). An image side
    shorter than the tile gives one tile spanning it."""

    def starts(length: int) -> list[int]:
        if length <= tile:
            return [0]
        return [*range(0, length - tile, tile - overlap), length - tile]

    return [
        (x, y, min(x + tile, width), min(y + tile, height))
        for y in starts(height)
        for x in starts(width)
    ]


def tile_samples(samples: Sequence[Sample], tile: int) -> list[Sample]:
    """Each sample as the samples of its tiles, side by side (what a tiled model trains on);
    only the file headers are read."""
    return [
        replace(sample, box=box)
        for sample in samples
        for box in tile_boxes(*image_size(sample.path), tile)
    ]


def tile_labelled(samples: Sequence[Sample], tile: int) -> list[Sample]:
    """Labelled defects as tiles (what ADTR+ trains on when tiled): a tile is anomalous where
    its piece of the defect's mask is, and a good tile (known normal everywhere) where it holds
    none of it. A defect labelled by image alone cannot say which tile holds it: refused."""
    unmasked = [s for s in samples if s.label and s.mask_path is None]
    if unmasked:
        raise AdformerError(
            f"{len(unmasked)} labelled defect(s) have no mask (e.g. {unmasked[0].path}): "
            "tiling needs each defect's mask to know which tiles hold it; give masks, train "
            "without tiling, or use synthetic_anomalies"
        )
    out = []
    for sample in samples:
        mask = None
        if sample.mask_path is not None:
            problems = []
            check_mask_size(sample.path, sample.mask_path, problems)
            raise_problems(sample.category, problems)
            mask = read_mask(sample.mask_path)
        for box in tile_boxes(*image_size(sample.path), tile):
            left, top, right, bottom = box
            label = sample.label if mask is None else int(mask[top:bottom, left:right].any())
            defect = sample.defect if label else "good"
            out.append(replace(sample, box=box, label=label, defect=defect))
    return out


def _resize(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an (h, w) or (h, w, C) float array."""
    if values.shape[:2] == (height, width):
        return values.astype(np.float32, copy=False)
    planes = values[..., None] if values.ndim == 2 else values
    out = [
        np.asarray(Image.fromarray(np.ascontiguousarray(p, np.float32)).resize((width, height)))
        for p in np.moveaxis(planes, -1, 0)
    ]
    stacked = np.stack(out, axis=-1)
    return stacked[..., 0] if values.ndim == 2 else stacked


def _ramp(length: int, width: float) -> np.ndarray:
    """Blending weight along one side of a tile: rising over `width` pixels at both ends."""
    position = np.arange(length, dtype=np.float32)
    edge = np.minimum(position + 1, length - position)
    return np.minimum(edge / (width + 1), 1.0)


class Stitcher:
    """Accumulates the tiles' outputs ((S, S) maps or (S, S, C) images) into one array at the
    model's scale, blended linearly across overlaps. The tiles form a grid, so the blending
    weights' sum is the outer product of one sum per axis: the only array as large as the
    image is the result itself."""

    def __init__(self, width: int, height: int, tile: int, size: int, overlap: int, channels=0):
        self.scale = size / tile
        self.shape = (math.ceil(height * self.scale), math.ceil(width * self.scale))
        self.total = np.zeros(self.shape + ((channels,) if channels else ()), np.float32)
        self.ramp = overlap * self.scale
        boxes = tile_boxes(width, height, tile, overlap)
        self.rows = self._weights({self._span(b[1::2], 0) for b in boxes}, self.shape[0])
        self.cols = self._weights({self._span(b[::2], 1) for b in boxes}, self.shape[1])

    def _span(self, ends: tuple[int, int], axis: int) -> tuple[int, int]:
        return tuple(min(round(v * self.scale), self.shape[axis]) for v in ends)

    def _weights(self, spans: set[tuple[int, int]], length: int) -> np.ndarray:
        weights = np.zeros(length, np.float32)
        for start, end in spans:
            weights[start:end] += _ramp(end - start, self.ramp)
        return np.maximum(weights, 1e-12)

    def add(self, box: Box, values: np.ndarray) -> None:
        left, right = self._span(box[::2], 1)
        top, bottom = self._span(box[1::2], 0)
        height, width = bottom - top, right - left
        weight = np.outer(_ramp(height, self.ramp), _ramp(width, self.ramp))
        resized = _resize(values, height, width)
        self.total[top:bottom, left:right] += resized * (
            weight[..., None] if resized.ndim == 3 else weight
        )

    def result(self) -> np.ndarray:
        """The blended array (computed in place: call once)."""
        extra = (None,) * (self.total.ndim - 2)
        self.total /= self.rows[(slice(None), None, *extra)]
        self.total /= self.cols[(None, slice(None), *extra)]
        return self.total


def pooled_max(values: np.ndarray, pool: int, band: int = 256) -> float:
    """The largest mean over `pool`×`pool` windows (stride 1): the image score a method takes
    from its map (`Detector.score_pool`; 1 is the plain maximum). Computed in bands of rows,
    so a large map needs no large temporary arrays."""
    pool = max(1, min(pool, *values.shape))
    if pool == 1:
        return float(values.max())
    k, best = pool, -np.inf
    for start in range(0, values.shape[0] - k + 1, band):
        rows = values[start : start + band + k - 1].astype(np.float64)
        sums = np.pad(rows.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        window = sums[k:, k:] - sums[:-k, k:] - sums[k:, :-k] + sums[:-k, :-k]
        best = max(best, float(window.max()))
    return best / (k * k)


def max_cells(values: np.ndarray, size: int) -> np.ndarray:
    """An (h, w) map as (size, size), each pixel the maximum over its cell (upsampled
    bilinearly first along a side shorter than `size`)."""
    height, width = values.shape
    if height < size or width < size:
        height, width = max(height, size), max(width, size)
        values = _resize(values, height, width)
    rows = np.arange(size) * height // size
    cols = np.arange(size) * width // size
    return np.maximum.reduceat(np.maximum.reduceat(values, rows, axis=0), cols, axis=1)


# a batch of tiles (N, 3, S, S) float32 in [0, 1] → maps (N, S, S), reconstructions or None
RunTiles = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


def score_tiled(
    image: Image.Image,
    run: RunTiles,
    *,
    tile: int,
    overlap: int,
    size: int,
    score_pool: int,
    batch_size: int,
    reconstruct: bool = False,
) -> tuple[float, np.ndarray, np.ndarray | None]:
    """One image tile by tile: its score, its (size, size) map and, with `reconstruct` (for a
    model that makes them), its stitched (size, size, 3) uint8 reconstruction."""
    if image.mode != "RGB":
        raise AdformerError(f"expected an RGB image, got mode {image.mode}")
    boxes = tile_boxes(image.width, image.height, tile, overlap)
    maps = Stitcher(image.width, image.height, tile, size, overlap)
    recons = Stitcher(image.width, image.height, tile, size, overlap, 3) if reconstruct else None
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start : start + batch_size]
        tiles = np.stack([image_to_array(image.crop(box), size) for box in chunk])
        out_maps, out_recons = run(tiles)
        for i, box in enumerate(chunk):
            maps.add(box, out_maps[i])
            if recons is not None and out_recons is not None:
                recons.add(box, out_recons[i].astype(np.float32))
    stitched = maps.result()
    recon = None
    if recons is not None:
        whole = _resize(recons.result(), size, size)
        recon = whole.clip(0, 255).round().astype(np.uint8)
    return pooled_max(stitched, score_pool), max_cells(stitched, size), recon
