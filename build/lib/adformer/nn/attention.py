"""Multi-head attention with position embeddings on queries and keys, and the neighbour mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def neighbour_mask(height: int, width: int, size: int) -> torch.Tensor:
    """(HW, HW) bool, True where attention is *allowed*.

    UniAD's neighbour-masked attention (UniAD, arXiv:2206.03687 §3): a token may not attend to the
    ``size``×``size`` neighbourhood centred on itself (itself included), so it cannot copy its own
    input to the output."""
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    near = ((rows[:, None] - rows[None, :]).abs() <= size // 2) & (
        (cols[:, None] - cols[None, :]).abs() <= size // 2
    )
    return ~near


class Attention(nn.Module):
    """Dot-product attention over (B, L, D) tokens; ``mask`` is (Lq, Lk) bool, True = allowed."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, length, dim = query.shape

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, self.heads, dim // self.heads).transpose(1, 2)

        mixed = F.scaled_dot_product_attention(
            split(self.q(query)),
            split(self.k(key)),
            split(self.v(value)),
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(mixed.transpose(1, 2).reshape(batch, length, dim))


class FeatureSelfAttention(nn.Module):
    """InTra's multihead *feature* self-attention, MFSA (InTra, arXiv:2104.13897 §3.1): queries and
    keys come from MLPs D→2D→D/2 with GELU (a nonlinear dimension reduction, so near-identical
    patches still get distinct attention weights); values and output are linear. ``feature=False``
    is the standard MSA of the paper's ablation (linear D→D queries and keys)."""

    def __init__(self, dim: int, heads: int, feature: bool = True):
        super().__init__()
        qk_dim = dim // 2 if feature else dim
        if qk_dim % heads or dim % heads:
            raise ValueError(f"dims {dim} and {qk_dim} must be divisible by heads {heads}")
        self.heads = heads

        def projection() -> nn.Module:
            if not feature:
                return nn.Linear(dim, dim)
            return nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, qk_dim))

        self.q, self.k = projection(), projection()
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length, dim = tokens.shape

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, length, self.heads, -1).transpose(1, 2)

        q, k, v = split(self.q(tokens)), split(self.k(tokens)), split(self.v(tokens))
        # written out: with 49 tokens, SDPA's CPU fallback spends more on its masking checks
        # than on the products (and the query/key and value widths differ under MFSA)
        weights = (q @ k.transpose(-2, -1)).mul_(q.shape[-1] ** -0.5).softmax(-1)
        return self.out((weights @ v).transpose(1, 2).reshape(batch, length, dim))
