import torch

from adformer.nn.attention import Attention, neighbour_mask
from adformer.nn.feature_transformer import FeatureTransformer
from adformer.nn.position import LearnedPosition2d


def test_neighbour_mask_hides_exactly_the_neighbourhood():
    mask = neighbour_mask(6, 5, 3).view(6, 5, 6, 5)
    assert not mask[2, 2, 1:4, 1:4].any()  # own 3x3 neighbourhood, itself included
    assert mask[2, 2].sum() == 30 - 9
    assert not mask[0, 0, :2, :2].any() and mask[0, 0].sum() == 30 - 4  # clipped at the corner


def test_masked_attention_cannot_see_the_neighbourhood():
    torch.manual_seed(0)
    attention = Attention(8, 2).eval()
    mask = neighbour_mask(5, 5, 3)
    x = torch.randn(1, 25, 8)
    changed = x.clone()
    changed[0, 12] += 5.0  # perturb the centre token (row 2, col 2) as key and value
    before, after = attention(x, x, x, mask), attention(x, changed, changed, mask)
    hidden_from = neighbour_mask(5, 5, 3)[:, 12] == 0  # tokens whose neighbourhood holds 12
    assert torch.allclose(before[0, hidden_from], after[0, hidden_from], atol=1e-6)
    assert not torch.allclose(before[0, ~hidden_from], after[0, ~hidden_from], atol=1e-3)


def test_layerwise_queries_versus_single_query():
    common = dict(
        tokens=16, dim=8, heads=2, ffn=16, encoder_layers=1, decoder_layers=3, dropout=0.0
    )
    uniad = FeatureTransformer(**common, layerwise_queries=True, mask=None)
    adtr = FeatureTransformer(**common, layerwise_queries=False, mask=None)
    assert sum(layer.query is not None for layer in uniad.decoder) == 3 and uniad.query is None
    assert all(layer.query is None for layer in adtr.decoder) and adtr.query.shape == (16, 8)
    pos = LearnedPosition2d(4, 4, 8)()
    assert pos.shape == (16, 8)
    x = torch.randn(2, 16, 8)
    assert uniad(x, pos).shape == adtr(x, pos).shape == (2, 16, 8)
