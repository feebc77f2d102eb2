import pytest
import torch

from adformer.data import load_category
from adformer.errors import AdformerError
from adformer.evaluation.peers import Peer


@pytest.mark.parametrize("coreset", [0, 1.5])
def test_coreset_is_a_fraction(coreset):
    with pytest.raises(AdformerError, match="coreset"):
        Peer("patchcore", coreset=coreset)


def test_patchcore_keeps_every_patch_without_a_coreset(synthetic_root):
    pytest.importorskip("anomalib", reason="the peers are a benchmark-only extra")
    support = load_category(synthetic_root, "dots").train[:2]
    full = Peer("patchcore", coreset=1.0).fit(support).model.memory_bank
    assert full.shape[0] == 2 * 32 * 32  # 256 px at stride 8, every patch of both images
    sampled = Peer("patchcore").fit(support).model.memory_bank
    assert sampled.shape[0] == int(full.shape[0] * 0.01)
    assert torch.isfinite(full).all()
