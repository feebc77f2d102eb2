"""The feature-reconstruction transformer shared by UniAD (arXiv:2206.03687) and ADTR
(arXiv:2209.01816).

Both reconstruct frozen CNN feature tokens with a DETR-style encoder–decoder whose decoder is
driven by *learned query embeddings* rather than by the input (the input reaches the output
only through attention keys/values, which is what prevents the identity shortcut). The
variants are switches:

- ``layerwise_queries``: UniAD gives every decoder layer its own query embedding; its first
  attention reads the encoder memory and its second reads the previous layer's output
  (official UniAD code). ADTR has one query embedding feeding a standard decoder
  (self-attention, then cross-attention to the memory).
- ``mask``: the neighbour mask (UniAD) applied to encoder self-attention and both decoder
  attentions; ``None`` for full attention (ADTR).

Post-norm layers, ReLU and dropout 0.1 follow the official UniAD configuration.
"""

from __future__ import annotations

import torch
from torch import nn

from adformer.nn.attention import Attention


class _FeedForward(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.attn = Attention(dim, heads, dropout)
        self.ffn = _FeedForward(dim, ffn, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        qk = x + pos
        x = self.norm1(x + self.drop(self.attn(qk, qk, x, mask)))
        return self.norm2(x + self.drop(self.ffn(x)))


class DecoderLayer(nn.Module):
    """One decoder layer; with ``tokens`` set it owns a layer-wise query embedding (UniAD)."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float, tokens: int | None):
        super().__init__()
        self.query = nn.Parameter(torch.randn(tokens, dim) * 0.02) if tokens else None
        self.attn1 = Attention(dim, heads, dropout)
        self.attn2 = Attention(dim, heads, dropout)
        self.ffn = _FeedForward(dim, ffn, dropout)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(dim) for _ in range(3))
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        out: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        if self.query is not None:  # UniAD: own query; attend to memory, then to previous output
            tgt = self.query.expand(memory.shape[0], -1, -1)
            first_kv, second_kv = memory, out
        else:  # ADTR/DETR: self-attention over the running queries, then the memory
            tgt, first_kv, second_kv = out, out, memory
        tgt = self.norm1(tgt + self.drop(self.attn1(tgt + pos, first_kv + pos, first_kv, mask)))
        tgt = self.norm2(tgt + self.drop(self.attn2(tgt + pos, second_kv + pos, second_kv, mask)))
        return self.norm3(tgt + self.drop(self.ffn(tgt)))


class FeatureTransformer(nn.Module):
    """Encoder–decoder over (B, L, D) tokens returning (B, L, D) reconstructions."""

    def __init__(
        self,
        tokens: int,
        dim: int,
        heads: int,
        ffn: int,
        encoder_layers: int,
        decoder_layers: int,
        dropout: float,
        layerwise_queries: bool,
        mask: torch.Tensor | None,
    ):
        super().__init__()
        self.encoder = nn.ModuleList(
            EncoderLayer(dim, heads, ffn, dropout) for _ in range(encoder_layers)
        )
        self.decoder = nn.ModuleList(
            DecoderLayer(dim, heads, ffn, dropout, tokens if layerwise_queries else None)
            for _ in range(decoder_layers)
        )
        self.query = None if layerwise_queries else nn.Parameter(torch.randn(tokens, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.register_buffer("mask", mask, persistent=False)  # built once per grid size

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        memory = tokens
        for layer in self.encoder:
            memory = layer(memory, pos, self.mask)
        # UniAD's first decoder layer reads the memory as its "previous output"; ADTR starts from
        # its single query embedding.
        out = memory if self.query is None else self.query.expand(tokens.shape[0], -1, -1)
        for layer in self.decoder:
            out = layer(out, memory, pos, self.mask)
        return self.norm(out)
