"""Multi-head attention with position embeddings on queries and keys, and the neighbour mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def neighbour_mask(height: int, width: int, size: int) -> torch.Tensor:
    """(HW, HW) bool, True where attention is *allowed*.

    UniAD's neighbour-masked attention (seeds/004 §3): a token may not attend to the
    ``size``×``size`` neighbourhood centred on itself (itself included), so it cannot copy its
    own input to the output.
    """
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
