"""Nearest-neighbour distances to the features of a few samples: the few-shot alternatives to
a per-position Gaussian, whose covariance few samples cannot estimate (RegAD's 88 views of 4
images against 176 channels). `PositionMemory` compares a feature with the samples' features at
its own position; `PatchMemory` with theirs at any position, as PatchCore's memory bank
(arXiv:2106.08265 §3.2, every patch kept: no coreset), so a part that moves is still matched."""

from __future__ import annotations

import torch
from torch import nn


def _nearest_squared(x: torch.Tensor, memory: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """Queries (..., Q, C) against a memory (..., M, C) with its squared norms `norm`
    (broadcast to (..., 1, M)) → each query's smallest squared distance (..., Q), as
    ‖x‖² − 2x·m + ‖m‖² by one (batched) product: exportable, no cdist, no loop."""
    return (x.square().sum(-1, keepdim=True) - 2 * x @ memory.transpose(-1, -2) + norm).amin(-1)


class PositionMemory(nn.Module):
    """The features (P, N, C) of N samples at each of P positions, over the channels
    `channel_index` of the embedding; a new embedding's distance at a position is the L2
    distance to the nearest of the N there.

    >>> memory = PositionMemory(positions=64, samples=20, channels=8)
    >>> memory.fit(torch.randn(20, 8, 64))
    >>> memory.distance(torch.randn(3, 8, 64)).shape
    torch.Size([3, 64])
    """

    SHAPE = ("positions", "samples", "channels")  # the constructor's arguments

    def __init__(self, positions: int, samples: int, channels: int):
        super().__init__()
        self.register_buffer("features", torch.zeros(positions, samples, channels))
        self.register_buffer("channel_index", torch.arange(channels))

    @property
    def shape(self) -> dict[str, int]:
        """`SHAPE` → size, what a saved model is rebuilt with before its buffers load."""
        return dict(zip(self.SHAPE, self.features.shape, strict=True))

    def fit(self, embeddings: torch.Tensor) -> None:
        """(N, C, P) samples → the memory."""
        self.features.copy_(embeddings.permute(2, 0, 1))

    def distance(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, C, P) → (B, P): ‖x − m‖² = ‖x‖² − 2x·m + ‖m‖² by one batched product over all
        positions (exportable: no cdist, no loop)."""
        x = embeddings.permute(2, 0, 1)  # (P, B, C)
        squared = _nearest_squared(x, self.features, self.features.square().sum(-1)[:, None])
        return squared.clamp_min(0).sqrt().T


class PatchMemory(nn.Module):
    """The features (M, C) of every position of N samples (M = N·P), over the channels
    `channel_index` of the embedding; a new embedding's distance at a position is the L2
    distance to the nearest of all M.

    >>> memory = PatchMemory(samples=20 * 64, channels=8)
    >>> memory.fit(torch.randn(20, 8, 64))
    >>> memory.distance(torch.randn(3, 8, 64)).shape
    torch.Size([3, 64])
    """

    SHAPE = ("samples", "channels")  # the constructor's arguments
    CHUNK = 1 << 25  # query × memory distances computed at once when eager (128 MB in fp32)

    def __init__(self, samples: int, channels: int):
        super().__init__()
        self.register_buffer("features", torch.zeros(samples, channels))
        self.register_buffer("channel_index", torch.arange(channels))

    @property
    def shape(self) -> dict[str, int]:
        """`SHAPE` → size, what a saved model is rebuilt with before its buffers load."""
        return dict(zip(self.SHAPE, self.features.shape, strict=True))

    def fit(self, embeddings: torch.Tensor) -> None:
        """(N, C, P) samples → the memory of their N·P features."""
        self.features.copy_(embeddings.permute(0, 2, 1).reshape(-1, embeddings.shape[1]))

    def distance(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, C, P) → (B, P), as `PositionMemory.distance` against the whole memory; eagerly a
        chunk of queries at a time (the full (B·P, M) product would not fit), traced at once."""
        batch, channels, positions = embeddings.shape
        x = embeddings.permute(0, 2, 1).reshape(-1, channels)  # (B·P, C)
        norm = self.features.square().sum(-1)
        if torch.compiler.is_exporting():
            squared = _nearest_squared(x, self.features, norm)
        else:
            chunks = x.split(self.CHUNK // len(norm) or 1)
            squared = torch.cat([_nearest_squared(q, self.features, norm) for q in chunks])
        return squared.clamp_min(0).sqrt().view(batch, positions)
