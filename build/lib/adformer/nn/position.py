"""Learned 2-D position embedding: a row vector and a column vector per grid cell, concatenated."""

from __future__ import annotations

import torch
from torch import nn


class LearnedPosition2d(nn.Module):
    """(H·W, D) embedding = column(j) ⊕ row(i), as in DETR's learned variant used by UniAD."""

    def __init__(self, height: int, width: int, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"position embedding dim must be even, got {dim}")
        self.rows = nn.Parameter(torch.empty(height, dim // 2).uniform_())
        self.cols = nn.Parameter(torch.empty(width, dim // 2).uniform_())

    def forward(self) -> torch.Tensor:
        height, width = self.rows.shape[0], self.cols.shape[0]
        grid = torch.cat(
            [
                self.cols[None, :, :].expand(height, width, -1),
                self.rows[:, None, :].expand(height, width, -1),
            ],
            dim=-1,
        )
        return grid.reshape(height * width, -1)
