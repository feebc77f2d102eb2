"""Large images by tiling: the geometry, the stitching, the score, and a defect on a tile
border found by a tiled model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import adformer
from adformer.data import load_root
from adformer.data.synthetic import make_synthetic_dataset
from adformer.data.types import Sample
from adformer.errors import AdformerError
from adformer.tiling import Stitcher, max_cells, pooled_max, tile_boxes, tile_labelled


@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap"), [(200, 150, 64, 16), (64, 64, 64, 8)]
)
def test_tiles_cover_the_image_and_share_the_overlap(width, height, tile, overlap):
    boxes = tile_boxes(width, height, tile, overlap)
    covered = np.zeros((height, width), int)
    for left, top, right, bottom in boxes:
        assert (right - left, bottom - top) == (min(tile, width), min(tile, height))
        covered[top:bottom, left:right] += 1
    assert covered.min() >= 1
    lefts = sorted({b[0] for b in boxes})
    assert all(b - a <= tile - overlap for a, b in zip(lefts, lefts[1:], strict=False))


def test_an_image_smaller_than_the_tile_is_one_tile():
    assert tile_boxes(30, 20, 64, 16) == [(0, 0, 30, 20)]


def test_bad_tiling_is_refused():
    with pytest.raises(AdformerError, match="tile_overlap"):
        adformer.create("uniad", preset="tiny", tile=32, tile_overlap=32)
    with pytest.raises(AdformerError, match="at least 16"):
        adformer.create("uniad", preset="tiny", tile=8)


@pytest.mark.parametrize("tile", [32, 64])  # model size 32: tiles seen at 1× and ½×
def test_stitching_a_map_seen_through_tiles_gives_the_map(tile):
    size, overlap, (height, width) = 32, 12, (100, 140)
    y, x = np.mgrid[0:height, 0:width]
    field = np.sin(x / 9.0) + np.cos(y / 7.0)  # smooth: resizing barely changes it
    stitcher = Stitcher(width, height, tile, size, overlap)
    for box in tile_boxes(width, height, tile, overlap):
        left, top, right, bottom = box
        crop = Image.fromarray(field[top:bottom, left:right].astype(np.float32))
        stitcher.add(box, np.asarray(crop.resize((size, size), Image.BILINEAR)))
    stitched = stitcher.result()
    scale = size / tile
    assert stitched.shape == (round(height * scale), round(width * scale))
    expected = np.asarray(
        Image.fromarray(field.astype(np.float32)).resize(stitched.shape[::-1], Image.BILINEAR)
    )
    assert np.abs(stitched - expected)[2:-2, 2:-2].max() < 0.05 * np.ptp(field)


def test_the_score_is_the_detectors_pooled_maximum():
    values = np.random.default_rng(0).random((40, 50)).astype(np.float32)
    for pool in (1, 3, 5):
        pooled = torch.nn.functional.avg_pool2d(torch.from_numpy(values)[None, None], pool, 1)
        assert pooled_max(values, pool) == pytest.approx(float(pooled.max()), rel=1e-6)
        # computed in bands of rows: the bands' seams lose no window
        assert pooled_max(values, pool, band=7) == pytest.approx(float(pooled.max()), rel=1e-6)


def test_the_map_keeps_each_cells_maximum():
    values = np.zeros((100, 120), np.float32)
    values[51, 77] = 5.0  # one hot pixel survives the 4× reduction
    small = max_cells(values, 25)
    assert small.shape == (25, 25) and small.max() == 5.0
    assert np.unravel_index(small.argmax(), small.shape) == (51 * 25 // 100, 77 * 25 // 120)


def test_a_defect_on_a_tile_border_is_found(tiny_uniad, tmp_path):
    """A tiled UniAD trained on 192-pixel textures as 96-pixel tiles finds a defect centred
    where three tiles meet (x = y = 96: the edge of the first tile, the start of the last)."""
    root = make_synthetic_dataset(
        tmp_path, categories=("grating",), n_train=12, n_test_good=4, n_test_defect=1, size=192
    )
    (category,) = load_root(root)
    torch.manual_seed(0)
    detector = adformer.create("uniad", **tiny_uniad, tile=96, tile_overlap=32)
    detector.fit(category, progress=False, device="cpu")
    assert (96, 96) in {(b[2], b[3]) for b in tile_boxes(192, 192, 96, 32)}

    good = [s.path for s in category.test if s.label == 0]
    image = np.array(Image.open(good[0]).convert("RGB"))
    image[86:106, 86:106] = (250, 30, 30)  # a red square across the tile borders
    result = detector.predict([image])
    assert result.scores[0] > detector.predict(good).scores.max()
    peak = np.unravel_index(result.maps[0].argmax(), result.maps[0].shape)
    cell = 192 / detector.config.image_size  # image pixels per map pixel
    assert all(86 - 8 <= p * cell <= 106 + 8 for p in peak)


def test_a_labelled_defect_tiles_with_its_mask(tmp_path):
    """The tiles holding a piece of the mask are anomalous, the others good (and known good
    everywhere: they keep the mask); a defect without a mask, or with a mask of another size,
    is refused."""
    Image.new("RGB", (100, 60)).save(tmp_path / "crack.png")
    mask = np.zeros((60, 100), np.uint8)
    mask[12:18, 70:90] = 255  # rows 12–17, columns 70–89: only in the right-hand tiles
    Image.fromarray(mask).save(tmp_path / "crack_mask.png")
    defect = Sample(tmp_path / "crack.png", "c", 1, "crack", tmp_path / "crack_mask.png")
    tiles = tile_labelled([defect], 50)
    assert [t.box for t in tiles] == tile_boxes(100, 60, 50)
    assert [(t.label, t.defect) for t in tiles] == [
        (0, "good"),
        (1, "crack"),
        (0, "good"),
        (1, "crack"),
    ]
    assert all(t.mask_path == defect.mask_path for t in tiles)

    with pytest.raises(AdformerError, match="no mask"):
        tile_labelled([Sample(tmp_path / "crack.png", "c", 1, "crack")], 50)
    Image.fromarray(mask[:, :90]).save(tmp_path / "narrow_mask.png")
    with pytest.raises(AdformerError, match=r"is \(90, 60\) but"):
        tile_labelled(
            [Sample(tmp_path / "crack.png", "c", 1, "crack", tmp_path / "narrow_mask.png")], 50
        )
