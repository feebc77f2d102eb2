"""Reconstruction of frozen multi-scale CNN features by a query-driven transformer — the
family of UniAD (seeds/004) and ADTR (seeds/003). The registered methods (`uniad.py`,
`adtr.py`) are configurations of this one detector.

Flow: image → frozen backbone stages, resized to stride 16 and concatenated (B, C, h, w) →
[feature jitter, training only] → linear C→D → transformer → linear D→C → reconstruction;
map = ‖f − f̂‖₂ over channels, upsampled to the image; score = max of the average-pooled map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adformer.backbones.cache import cache_features
from adformer.backbones.extractor import FeatureExtractor, build_extractor
from adformer.data.types import Sample
from adformer.errors import AdformerError
from adformer.methods.base import Detector, DetectorConfig
from adformer.nn.attention import neighbour_mask
from adformer.nn.feature_transformer import FeatureTransformer
from adformer.nn.position import LearnedPosition2d


@dataclass
class FeatureReconstructionConfig(DetectorConfig):
    """Defaults are UniAD's paper configuration (seeds/004 §4.2, official config)."""

    backbone: str = "efficientnet_b4"
    backbone_weights: str | None = None
    stages: tuple[int, ...] = (1, 2, 3, 4)
    feature_stride: int = 16
    hidden_dim: int = 256
    heads: int = 8
    ffn_dim: int = 1024
    encoder_layers: int = 4
    decoder_layers: int = 4
    dropout: float = 0.1
    layerwise_queries: bool = True
    neighbour_size: int | None = 7
    jitter_scale: float | None = 20.0
    jitter_prob: float = 1.0
    score_pool: int = 16
    cache_budget_gb: float = 4.0
    # optimisation (seeds/004 §4.2)
    epochs: int = 1000
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 1e-4
    weight_decay: float = 1e-4
    lr_milestones: tuple[int, ...] = (800,)
    grad_clip: float | None = 0.1


class FeatureReconstructor(nn.Module):
    """Features (B, C, h, w) → reconstructed features (B, C, h, w)."""

    def __init__(self, channels: int, grid: tuple[int, int], config: FeatureReconstructionConfig):
        super().__init__()
        height, width = grid
        mask = None
        if config.neighbour_size:
            mask = neighbour_mask(height, width, config.neighbour_size)
            if not mask.any(dim=1).all():
                raise AdformerError(
                    f"a {config.neighbour_size}x{config.neighbour_size} neighbour mask hides the "
                    f"whole {height}x{width} feature grid: use a larger image or smaller mask"
                )
        self.grid = grid
        self.jitter_scale = config.jitter_scale
        self.jitter_prob = config.jitter_prob
        self.input_proj = nn.Linear(channels, config.hidden_dim)
        self.output_proj = nn.Linear(config.hidden_dim, channels)
        self.position = LearnedPosition2d(height, width, config.hidden_dim)
        self.transformer = FeatureTransformer(
            tokens=height * width,
            dim=config.hidden_dim,
            heads=config.heads,
            ffn=config.ffn_dim,
            encoder_layers=config.encoder_layers,
            decoder_layers=config.decoder_layers,
            dropout=config.dropout,
            layerwise_queries=config.layerwise_queries,
            mask=mask,
        )
        for p in self.parameters():  # official UniAD initialiser: xavier_uniform on matrices
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def jitter(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feature jitter (seeds/004 §3.4): ε ~ N(0, (α‖f‖/C)²) per token, with probability p."""
        if torch.rand(()) >= self.jitter_prob:
            return tokens
        scale = tokens.norm(dim=-1, keepdim=True) / tokens.shape[-1] * self.jitter_scale
        return tokens + torch.randn_like(tokens) * scale

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = features.shape
        tokens = features.flatten(2).transpose(1, 2)  # (B, hw, C)
        if self.training and self.jitter_scale:
            tokens = self.jitter(tokens)
        hidden = self.transformer(self.input_proj(tokens), self.position())
        return self.output_proj(hidden).transpose(1, 2).reshape(batch, channels, height, width)


class FeatureReconstruction(Detector):
    """Detector over `FeatureReconstructor`; subclasses register it with their own presets."""

    config_class = FeatureReconstructionConfig
    config: FeatureReconstructionConfig

    @property
    def grid(self) -> tuple[int, int]:
        side = self.config.image_size // self.config.feature_stride
        return side, side

    def _build(self, pretrained: bool) -> None:
        c = self.config
        if c.image_size % c.feature_stride:
            raise AdformerError(
                f"image size {c.image_size} is not a multiple of the feature stride "
                f"{c.feature_stride}"
            )
        self.backbone_: FeatureExtractor = build_extractor(
            c.backbone, c.stages, c.backbone_weights, pretrained
        )
        self.network_ = FeatureReconstructor(sum(self.backbone_.channels), self.grid, c)

    def _modules(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone_, "network": self.network_}

    def _trainable(self) -> nn.Module:
        return self.network_

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone_.aligned(images, self.config.feature_stride)

    def _training_sets(self, train: list[Sample], val: list[Sample], device: torch.device):
        per_image = sum(self.backbone_.channels) * self.grid[0] * self.grid[1] * 4
        budget = self.config.cache_budget_gb * 2**30
        cached = [
            cache_features(self.features, part, self.config.image_size, per_image, budget, device)
            for part in (train, val)
        ]
        return cached[0], cached[1]

    def _loss(self, network: nn.Module, batch) -> torch.Tensor:
        # a tuple is a batch of cached features; a tensor is a batch of images (no cache)
        features = batch[0] if isinstance(batch, (list, tuple)) else self.features(batch)
        return F.mse_loss(network(features), features)

    def _maps(self, images: torch.Tensor) -> torch.Tensor:
        features = self.features(images)
        distance = (self.network_(features) - features).pow(2).sum(1, keepdim=True).sqrt()
        # bilinear with align_corners=True, as the official UniAD upsampler
        size = images.shape[-2:]
        return F.interpolate(distance, size, mode="bilinear", align_corners=True)[:, 0]

    def _scores(self, maps: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(maps[:, None], self.config.score_pool, stride=1)
        return pooled.flatten(1).amax(1)
