"""Reconstruction of frozen multi-scale CNN features by a query-driven transformer — the
family of UniAD (arXiv:2206.03687) and ADTR (arXiv:2209.01816). The registered methods (`uniad.py`,
`adtr.py`) are configurations of this one detector.

Flow: image → frozen backbone stages, resized to stride 16 and concatenated (B, C, h, w) →
[feature jitter, training only] → linear C→D → transformer → linear D→C → reconstruction;
map = ‖f − f̂‖₂ over channels, upsampled to the image (with `normalise_map`, its z-score at each
pixel over the training images); score = max of the average-pooled map.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from adformer.backbones.cache import cache_features
from adformer.backbones.extractor import FeatureExtractor, build_extractor, check_downsample
from adformer.data.dataset import TypedTensorDataset, image_to_tensor, loader
from adformer.data.images import read_region
from adformer.data.synthetic import paint_defect
from adformer.data.types import FeatureBatch, ImageBatch, LabelledFeatureBatch, Sample
from adformer.errors import AdformerError
from adformer.methods.base import Detector, DetectorConfig
from adformer.nn.attention import neighbour_mask
from adformer.nn.feature_transformer import FeatureTransformer
from adformer.nn.position import LearnedPosition2d


@dataclass
class FeatureReconstructionConfig(DetectorConfig):
    """Defaults are UniAD's paper configuration (UniAD, arXiv:2206.03687 §4.2, official config)."""

    backbone: str = "efficientnet_b4"
    backbone_weights: str | None = None
    stages: tuple[int, ...] = (1, 2, 3, 4)
    feature_stride: int = 16
    # how stages finer than the feature stride come down to it (`align_stages`): "bilinear"
    # (the official neck's: one point read every few pixels) or, not in the papers, "area"
    # (the mean over each cell, so a defect thinner than the stride still counts)
    downsample: str = "bilinear"
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
    score_pool: int = 16  # the official evaluation's 16×16 average pooling of the map
    # not in the papers: divide each backbone channel by its training std (after subtracting its
    # mean), so that no stage dominates the L2 reconstruction error
    standardise_features: bool = False
    # not in the papers: the map as a z-score at each pixel, (d − mean) / std of the training
    # images' maps there, so that places that always reconstruct poorly (edges, busbars, a
    # category's grain) do not outscore defects elsewhere (InTra's `normalise_map`, for features)
    normalise_map: bool = False
    cache_budget_gb: float = 4.0
    # ADTR+ (ADTR, arXiv:2209.01816 §3.3): learning from labelled or synthetic anomalies
    # α and k are not in the paper; chosen on a validation split of ELPV's *training* defects
    # (grid α ∈ {0.1, 1, 10} × k ∈ {1, 10, 50}, 3 seeds; benchmarks/adtr_plus.py,
    # docs/benchmarks.md). The spread between them is within seed noise.
    anomaly_alpha: float = 1.0  # weight of the anomaly term
    anomaly_topk: int = 50  # positions averaged into q for image-level labels
    synthetic_anomalies: int = 0  # painted on training images (confetti, scratch, blob)
    # optimisation (UniAD, arXiv:2206.03687 §4.2)
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
        """Feature jitter (UniAD, arXiv:2206.03687 §3.4): ε ~ N(0, (α‖f‖/C)²) per token, with
        probability p."""
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


MAX_SYNTHETIC_ANOMALIES = 10_000

# The shared shrink for 2 CPU cores (docs/benchmarks.md): same architecture, 128-d, 2+2
# layers, tf_efficientnet_lite0 (offline weights), fewer and larger steps. lr 1e-3 reached a
# lower *validation* loss (train/good hold-out) than 5e-4 at equal epochs on ELPV (9.4 vs
# 10.5 after 26 epochs). Dropout's random masks on the attention maps took a third of CPU
# training time, so the CPU presets train without it. On a CPU with bf16 instructions they
# train in bf16 autocast (`precision="auto"`, the default: fp32 elsewhere, where bf16 is
# emulated and slower): a third off ADTR's fit, validated within noise of fp32 (−0.2 points of
# image AUROC, 3 ELPV seeds; the test 0.0). That buys back the 100 epochs fp32 could not afford
# inside the budget of 10 minutes per 300 training images on 2 cores (80 had validated within
# noise of 100, −0.1 and −0.2, and cost the test 0.8 and 0.3): 100 epochs in bf16 fit faster
# than 80 in fp32 (UniAD 349 s vs 383 s, ADTR 324 s vs 361 s for ELPV's 2 × 150 cells) and
# validated as high or higher (UniAD +0.25 points, higher at every seed; docs/benchmarks.md).
# Then 150 epochs (lr ×0.1 at 120) validated higher than 100 at every seed, by a little (ADTR
# +0.1 image AUROC, pixel −0.4; UniAD +0.1, pixel 0.0), inside the budget (ADTR 451 s, UniAD
# 517 s for 2 × 150 cells); the test agreed at every seed (ADTR +0.7, UniAD +0.3).
# At most 3,300 steps per category (150 epochs of 352 images): a larger category trains fewer.
# Without bf16 instructions the 150 epochs run in fp32: an estimated ~1.9× the fit of fp32's
# 80 (not measured), over the budget there: `--epochs 100` keeps inside it.
CPU_SHRINK = {
    "backbone": "tf_efficientnet_lite0",
    "hidden_dim": 128,
    "ffn_dim": 512,
    "heads": 4,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "epochs": 150,
    "batch_size": 16,
    "lr": 1e-3,
    "lr_milestones": (120,),
    "dropout": 0.0,
    "max_steps": 3300,
}


# A GPU trains the `cpu` configuration, every epoch whatever the training set's size.
GPU_SCHEDULE = {"max_steps": None}


# Seconds on a CPU, for tests and smoke runs (not for quality): the same architecture, tiny,
# in fp32 on every machine (the same arithmetic with bf16 instructions or without; the engine's
# bf16 has its own tests).
TINY_SHRINK = {
    **CPU_SHRINK,
    "image_size": 64,
    "hidden_dim": 32,
    "ffn_dim": 64,
    "heads": 2,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "epochs": 5,
    "batch_size": 8,
    "lr_milestones": (),
    "inference_batch_size": 8,
    "precision": "fp32",
}


def _minus_log_one_minus_exp(x: torch.Tensor) -> torch.Tensor:
    """−log(1 − exp(−x)), computed stably (expm1) and finite at x → 0."""
    return -torch.log(-torch.expm1(-x.clamp_min(1e-6)))


class FeatureReconstruction(Detector):
    """Detector over `FeatureReconstructor`; subclasses register it with their own presets."""

    config_class = FeatureReconstructionConfig
    config: FeatureReconstructionConfig

    def _check_config(self) -> None:
        n = self.config.synthetic_anomalies
        if not 0 <= n <= MAX_SYNTHETIC_ANOMALIES:
            raise AdformerError(
                f"synthetic_anomalies must be between 0 and {MAX_SYNTHETIC_ANOMALIES}, got {n}"
            )
        if self.config.anomaly_topk < 1 or self.config.anomaly_alpha < 0:
            raise AdformerError("anomaly_topk must be >= 1 and anomaly_alpha >= 0")
        check_downsample(self.config.downsample)

    def _wants_anomalies(self) -> bool:
        return self.config.synthetic_anomalies > 0

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
        channels = sum(self.backbone_.channels)
        self.network_ = FeatureReconstructor(channels, self.grid, c)
        self._train_cache: Dataset | None = None
        self.stats_: nn.Module | None = None
        if c.standardise_features or c.normalise_map:
            self.stats_ = nn.Module()
        if c.standardise_features:
            self.stats_.register_buffer("mean", torch.zeros(channels, 1, 1))
            self.stats_.register_buffer("std", torch.ones(channels, 1, 1))
        if c.normalise_map:
            self.stats_.register_buffer("map_mean", torch.zeros(c.image_size, c.image_size))
            self.stats_.register_buffer("map_std", torch.ones(c.image_size, c.image_size))

    def modules(self) -> dict[str, nn.Module]:
        modules = {"backbone": self.backbone_, "network": self.network_}
        return modules if self.stats_ is None else {**modules, "stats": self.stats_}

    def _trainable(self) -> nn.Module:
        return self.network_

    def normalisation(self) -> dict:
        return {k: getattr(self.backbone_, k).flatten().tolist() for k in ("mean", "std")}

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone stages at the feature stride, concatenated (B, C, h, w); standardised per
        channel with training statistics when ``standardise_features``."""
        features = self._raw_features(images)
        if self.config.standardise_features:
            features = (features - self.stats_.mean) / self.stats_.std
        return features

    def _raw_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone_.aligned(images, self.config.feature_stride, self.config.downsample)

    @torch.no_grad()
    def _fit_feature_statistics(self, batches: Iterable[torch.Tensor]) -> None:
        """Per-channel mean and std of the training images' raw features (`batches`), over all
        positions."""
        total = square = count = 0
        for f in batches:
            total = total + f.double().sum((0, 2, 3))
            square = square + f.double().square().sum((0, 2, 3))
            count += f.shape[0] * f.shape[2] * f.shape[3]
        mean = total / count
        std = (square / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
        self.stats_.mean.copy_(mean.float().view(-1, 1, 1))
        self.stats_.std.copy_(std.float().view(-1, 1, 1))

    def _training_sets(self, train, val, device, anomalies=([], [])):
        per_image = sum(self.backbone_.channels) * self.grid[0] * self.grid[1] * 4
        budget = self.config.cache_budget_gb * 2**30
        size = self.config.image_size
        if not (anomalies[0] or anomalies[1] or self.config.synthetic_anomalies):
            cached = [
                cache_features(self._raw_features, part, size, per_image, budget, device)
                for part in (train, val)
            ]
            if self.config.standardise_features:
                self._standardise_cache(cached, train)
            self._train_cache = cached[0]  # for `_after_training`, which releases it
            return cached[0], cached[1]
        # ADTR+: normals and anomalies with their labels, always from the cache
        synthetic = self._synthetic_anomalies(train)
        cut = int(round(len(synthetic) * self.config.anomaly_val_fraction))
        total = len(train) + len(val) + sum(map(len, anomalies)) + len(synthetic)
        if total * per_image > budget:
            raise AdformerError(
                f"features of {total} images need {total * per_image / 2**30:.1f} GiB, more than "
                f"cache_budget_gb={self.config.cache_budget_gb}; raise it to train with anomalies"
            )
        sets = (
            self._labelled_features(train, anomalies[0], synthetic[cut:], device),
            self._labelled_features(val, anomalies[1], synthetic[:cut], device),
        )
        if self.config.standardise_features:
            self._standardise_cache(list(sets), train)
        return sets

    def _standardise_cache(self, cached: list[Dataset], train: list[Sample]) -> None:
        """Fit the statistics on the training images' raw features — from the training set's
        cache when it holds them (its first ``len(train)`` rows: ADTR+'s labelled sets put the
        good images first), so the backbone runs once per image — and standardise the cached
        sets in place (a set over the cache budget is standardised per batch by `features`)."""
        first = cached[0]
        self._fit_feature_statistics(
            first.tensors[0][: len(train)].split(self.config.inference_batch_size)
            if isinstance(first, TypedTensorDataset)
            else self._raw_batches(train)
        )
        for part in cached:
            if isinstance(part, TypedTensorDataset):
                part.tensors[0].sub_(self.stats_.mean.cpu()).div_(self.stats_.std.cpu())

    def _raw_batches(self, samples: list[Sample]) -> Iterator[torch.Tensor]:
        return (self._raw_features(x) for x in self._image_batches(samples))

    def _synthetic_anomalies(self, train: list[Sample]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(image, mask) pairs painted on seeded random training images."""
        rng = np.random.default_rng([self.config.seed, 11])
        size = self.config.image_size
        pairs = []
        for index in rng.integers(0, len(train), self.config.synthetic_anomalies):
            sample = train[index]
            image = read_region(sample.path, sample.box).resize((size, size), Image.BILINEAR)
            image = np.asarray(image)
            painted, mask = paint_defect(image, rng)
            pairs.append((image_to_tensor(Image.fromarray(painted), size), torch.from_numpy(mask)))
        return pairs

    @torch.no_grad()
    def _labelled_features(self, normals, anomalies, synthetic, device) -> TypedTensorDataset:
        """A `LabelledFeatureBatch` item for every image (raw features: not standardised), the
        normals first.

        Pixel labels are the defect's area fraction in each feature cell (soft labels: a thin
        scratch still counts where it crosses a cell).
        """
        size, batch_size = self.config.image_size, self.config.inference_batch_size
        parts = []

        def add(images, masks, has_mask, labels):
            y = F.adaptive_avg_pool2d(masks[:, None].float(), self.grid)[:, 0]
            parts.append((self._raw_features(images.to(device)).float().cpu(), y, has_mask, labels))

        for batch in loader(list(normals) + list(anomalies), size, batch_size):
            known = batch.has_mask | (batch.labels == 0)  # a good image is normal everywhere
            add(batch.images, batch.masks, known, batch.labels.float())
        for start in range(0, len(synthetic), batch_size):
            chunk = synthetic[start : start + batch_size]
            images = torch.stack([image for image, _ in chunk])
            masks = torch.stack([mask for _, mask in chunk])
            add(images, masks, torch.ones(len(chunk), dtype=torch.bool), torch.ones(len(chunk)))
        columns = (torch.cat(column) for column in zip(*parts, strict=True))
        return TypedTensorDataset(LabelledFeatureBatch, *columns)

    def _loss(
        self, network: nn.Module, batch: FeatureBatch | ImageBatch | LabelledFeatureBatch
    ) -> torch.Tensor:
        """MSE between features and their reconstruction (UniAD, arXiv:2206.03687); the
        ADTR+ loss for batches with labels."""
        match batch:
            case LabelledFeatureBatch():
                return self._anomaly_loss(network, batch)
            case FeatureBatch(features=features):
                pass
            case ImageBatch(images=images):  # over the cache budget: features on the fly
                features = self.features(images)
            case _:
                raise TypeError(f"no loss for a {type(batch).__name__}")
        return F.mse_loss(network(features), features)

    def _anomaly_loss(self, network: nn.Module, batch: LabelledFeatureBatch) -> torch.Tensor:
        """ADTR+ (ADTR, arXiv:2209.01816 §3.3): φ(u) = sqrt(mean_c d(c,u)² + 1) − 1 per position,
        then per image pixel labels: mean((1−y)φ) − α·log(1 − exp(−mean(y·φ))); image labels only:
        (1−y)·q − α·y·log(1 − exp(−q)), q = mean of the top-k φ. A good image has pixel labels (all
        zero), so its term is mean(φ)."""
        features, y, has_mask, label = batch
        alpha = self.config.anomaly_alpha
        phi = ((network(features) - features).pow(2).mean(1) + 1).sqrt().sub(1).flatten(1)
        y = y.flatten(1)
        pixel = ((1 - y) * phi).mean(1) + alpha * label * _minus_log_one_minus_exp(
            (y * phi).mean(1)
        )
        q = phi.topk(min(self.config.anomaly_topk, phi.shape[1]), dim=1).values.mean(1)
        image = (1 - label) * q + alpha * label * _minus_log_one_minus_exp(q)
        return torch.where(has_mask, pixel, image).mean()

    def _after_training(self, train: list[Sample]) -> None:
        """With `normalise_map`, the training images' map mean and std at each pixel — from
        their cached features when the cache holds them, so the backbone runs once per image."""
        cache, self._train_cache = self._train_cache, None
        if not self.config.normalise_map:
            return
        size = (self.config.image_size,) * 2
        if isinstance(cache, TypedTensorDataset):
            batches = cache.tensors[0].split(self.config.inference_batch_size)
            maps = (self._feature_distances(f.to(self.device_), size) for f in batches)
        else:
            maps = (self._distances(x) for x in self._image_batches(train))
        mean, variance = self._pixel_moments(maps)
        self.stats_.map_mean.copy_(mean)
        self.stats_.map_std.copy_(variance.sqrt())

    def _maps(self, images: torch.Tensor) -> torch.Tensor:
        maps = self._distances(images)
        if self.config.normalise_map:
            maps = (maps - self.stats_.map_mean) / self.stats_.map_std
        return maps

    def _distances(self, images: torch.Tensor) -> torch.Tensor:
        """‖f − f̂‖₂ over channels at each feature position, upsampled to the image (B, S, S)."""
        return self._feature_distances(self.features(images), images.shape[-2:])

    def _feature_distances(self, features: torch.Tensor, size) -> torch.Tensor:
        distance = (self.network_(features) - features).pow(2).sum(1, keepdim=True).sqrt()
        # bilinear with align_corners=True, as the official UniAD upsampler
        return F.interpolate(distance, size, mode="bilinear", align_corners=True)[:, 0]
