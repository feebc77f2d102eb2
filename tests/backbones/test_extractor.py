"""How the stages of a backbone are brought to one feature grid."""

import pytest
import torch

from adformer.backbones.extractor import align_stages
from adformer.errors import AdformerError


def test_area_downsampling_keeps_a_line_that_bilinear_reads_past():
    """A one-pixel line of a stride-2 stage, brought to a grid 8 times coarser: bilinear
    downsampling (the official neck's) reads columns 0, 9, 18, ... of the 64 and misses it;
    "area" keeps its mean over the cell it crosses."""
    fine = torch.zeros(1, 1, 64, 64)
    fine[..., 3] = 1.0
    coarse = torch.rand(1, 2, 4, 4)  # a stride-32 stage: upsampled the same way by both
    (bilinear, up_b), (area, up_a) = (
        align_stages([fine, coarse], (8, 8), mode) for mode in ("bilinear", "area")
    )
    assert bilinear.abs().max() == 0
    assert torch.allclose(area[..., 0], torch.full((1, 1, 8), 1 / 8)) and area[..., 1:].max() == 0
    assert torch.equal(up_a, up_b) and up_a.shape == (1, 2, 8, 8)


def test_an_unknown_downsampling_is_refused():
    with pytest.raises(AdformerError, match="unknown downsample 'max'.*bilinear, area"):
        align_stages([torch.zeros(1, 1, 8, 8)], (4, 4), "max")
