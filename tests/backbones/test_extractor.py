"""How the stages of a backbone are computed and brought to one feature grid."""

import pytest
import timm
import torch

from adformer.backbones.extractor import FeatureExtractor, align_stages
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


@pytest.mark.parametrize("stages", [(1, 2, 3, 4), (2, 3), (1, 2, 3, 4, 5)])
def test_blocks_after_the_last_stage_are_not_run_and_old_bundles_still_load(stages):
    """timm's EfficientNet feature model runs every block; the extractor keeps those up to the
    last stage asked for, with the same features, and loads a state that has the others."""
    torch.manual_seed(0)
    extractor = FeatureExtractor("tf_efficientnet_lite0", stages)
    full = timm.create_model(
        "tf_efficientnet_lite0", features_only=True, out_indices=[s - 1 for s in stages]
    ).eval()
    before = {"model." + k: v for k, v in full.state_dict().items()}  # a bundle from before
    before |= {k: v for k, v in extractor.state_dict().items() if not k.startswith("model.")}
    extractor.load_state_dict(before)  # strict: the dropped blocks' weights are ignored
    last = int(full.feature_info.module_name()[-1].split(".")[1])
    assert len(extractor.model.blocks) == last + 1 <= len(full.blocks)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = extractor(images), full(extractor.normalise(images))
    assert len(ours) == len(stages)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
