"""The Inpainting Transformer network (InTra, arXiv:2104.13897 §3.1–3.2): a window of patch
tokens with one covered position in, the covered K×K×C patch out. Pure self-attention, no
convolutions."""

from __future__ import annotations

import math

import torch
from torch import nn

from adformer.nn.attention import FeatureSelfAttention


class Block(nn.Module):
    """Pre-norm transformer block: x + MFSA(LN(x)), then x + MLP(LN(x)), MLP D→4D→D (GELU)."""

    def __init__(self, dim: int, heads: int, feature_attention: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = FeatureSelfAttention(dim, heads, feature_attention)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def sincos_2d(positions: int, dim: int) -> torch.Tensor:
    """2-D sine-cosine values (MAE, arXiv:2111.06377) for a square grid of `positions`, in
    row-major order: half the channels encode the row, half the column."""
    side = math.isqrt(positions)
    quarter = dim // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    parts = []
    for coordinate in (rows.flatten(), cols.flatten()):
        angles = coordinate[:, None].double() * frequencies[None]
        parts += [angles.sin(), angles.cos()]
    table = torch.cat(parts, dim=1).float()
    return torch.nn.functional.pad(table, (0, dim - table.shape[1]))


class InpaintingTransformer(nn.Module):
    """Patches (B, T, K²C) with global grid indices (B, T) and the covered token's index in the
    window (B,) → the covered patch (B, K²C) in [0, 1].

    `embed` and `inpaint` are separate so inference can embed every patch of an image once and
    gather the embeddings into windows (the covered token's own patch never enters: `inpaint`
    replaces that token by the inpaint embedding + its position, InTra arXiv:2104.13897 eq. 2).
    """

    def __init__(
        self,
        patch_dim: int,
        positions: int,
        dim: int,
        depth: int,
        heads: int,
        feature_attention: bool = True,
        long_residual: bool = True,
        position_init: str = "normal",
        readout: str = "mean",
    ):
        super().__init__()
        self.patch = nn.Linear(patch_dim, dim)  # E of InTra (arXiv:2104.13897 eq. 1)
        self.position = nn.Embedding(positions, dim)  # learned 1-D posemb(f(i, j))
        self.inpaint_token = nn.Parameter(torch.zeros(dim))
        self.blocks = nn.ModuleList(Block(dim, heads, feature_attention) for _ in range(depth))
        self.long_residual = long_residual
        if readout not in ("mean", "covered"):
            raise ValueError(f"unknown readout '{readout}': mean or covered")
        self.readout = readout
        # a final LayerNorm before the head, as in ViT (arXiv:2010.11929), whose blocks InTra
        # follows
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, patch_dim)
        if position_init == "sincos":
            with torch.no_grad():
                self.position.weight.copy_(sincos_2d(positions, dim))
        elif position_init == "normal":
            nn.init.trunc_normal_(self.position.weight, std=0.02)
        else:
            raise ValueError(f"unknown position_init '{position_init}': normal or sincos")
        nn.init.trunc_normal_(self.inpaint_token, std=0.02)

    def embed(self, patches: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """InTra (arXiv:2104.13897 eq. 1): y = x_p E + posemb(f(i, j))."""
        return self.patch(patches) + self.position(ids)

    def inpaint(self, tokens: torch.Tensor, ids: torch.Tensor, covered: torch.Tensor):
        """Replace the covered token (eq. 2), run the blocks, mean → affine → sigmoid."""
        index = torch.arange(tokens.shape[1], device=tokens.device)
        is_covered = (index[None, :] == covered[:, None])[..., None]
        z = self.inpaint_token + self.position(ids)
        x = torch.where(is_covered, z, tokens)
        outputs = [x]  # outputs[i] = output of block i; outputs[0] is the input sequence
        depth = len(self.blocks)
        for i, block in enumerate(self.blocks, start=1):
            # Long residual connections, U-Net style (InTra, arXiv:2104.13897 §3.2): block i in the
            # second half also receives the output of block n − i (n − i < i − 1 there).
            if self.long_residual and depth - i < i - 1:
                x = x + outputs[depth - i]
            x = block(x)
            outputs.append(x)
        x = self.norm(x)
        if self.readout == "covered":  # the covered token's own output, as BERT/MAE read out
            out = x[torch.arange(len(x), device=x.device), covered]
        else:  # the paper's: the mean over all output tokens
            out = x.mean(1)
        return torch.sigmoid(self.head(out))

    def forward(self, patches: torch.Tensor, ids: torch.Tensor, covered: torch.Tensor):
        return self.inpaint(self.embed(patches, ids), ids, covered)
