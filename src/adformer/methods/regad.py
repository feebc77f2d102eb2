"""RegAD, "Registration based Few-Shot Anomaly Detection" (arXiv:2207.07361): few-shot anomaly
detection by feature registration. One model is trained
on pairs of good images of many categories to register them onto each other (Siamese, SimSiam
loss, a spatial transformer after each backbone stage); a category never trained on is then
handled from k good images alone: their augmented, registered features give a Gaussian per
position, and test features are scored by Mahalanobis distance (or, options not in the paper,
by the distance to the nearest support feature at the same position, or at any). No retraining.

>>> model = adformer.create("regad", preset="cpu").fit(categories_but_the_new_one)  # doctest: +SKIP
>>> model.adapt(["good1.png", "good2.png"]).predict(["part.png"])  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d
from torch import nn

from adformer.backbones.extractor import build_extractor
from adformer.data.dataset import TypedTensorDataset, image_to_tensor, preload
from adformer.data.images import list_images, read_image
from adformer.data.types import Sample
from adformer.engine import EpochDataset
from adformer.errors import AdformerError
from adformer.evaluation.thresholds import quantile_threshold
from adformer.methods.base import (
    SCORING_OPTIONS,
    Detector,
    DetectorConfig,
    InferenceGraph,
    _to_image,
    _to_tensor,
)
from adformer.methods.registry import register
from adformer.nn.gaussian import ESTIMATORS, Gaussian, GaussianProduct
from adformer.nn.memory import PatchMemory, PositionMemory
from adformer.nn.stn import MODES, SpatialTransformer, compose, invert, warp
from adformer.tiling import tile_boxes


@dataclass
class RegADConfig(DetectorConfig):
    """Defaults are the paper's (RegAD, arXiv:2207.07361 §4, official code): ResNet-18
    conv1…layer3."""

    backbone: str = "resnet18"
    backbone_weights: str | None = None
    # the paper fine-tunes the backbone with the spatial transformers; False (not in the paper)
    # keeps its ImageNet weights and batch-norm statistics, and trains only the transformers and
    # the SimSiam heads
    train_backbone: bool = True
    stages: tuple[int, ...] = (2, 3, 4)  # layer1–3 of a ResNet (strides 4, 8, 16)
    stn_mode: str = "rotation_scale"
    shots: int = 2  # k: support images per training pair, and the default for adapt/test
    rounds: int = 10  # support sets drawn by the few-shot test
    covariance_eps: float = 0.01
    # each position's covariance before that ridge: "sample" (the paper's), or (not in the
    # paper) "ledoit_wolf", shrunk towards a multiple of the identity by an intensity estimated
    # from the support's own features, for k·22 views that are fewer than the channels
    covariance: str = "sample"
    # how the support's registered features score a test feature at each position: "gaussian"
    # (the paper's Mahalanobis distance), or, not in the paper and needing no covariance
    # estimate, "nearest" (the L2 distance to the nearest of the support views' features at
    # that position) or "patches" (... at any position, PatchCore's memory bank without a
    # coreset: its size is views × positions, so it suits few views, `support_views` "none")
    scoring: str = "gaussian"
    # not in the paper: each registered feature averaged over its p×p neighbourhood before it is
    # modelled or scored (PatchCore's locally aware patch features, arXiv:2106.08265 §3.1, p = 3
    # there); 1 = the paper's single position
    feature_pool: int = 1
    # the views of each support image that `adapt` models (`support_views`): the paper's 22, or
    # (not in the paper) "small" pose changes only, or "none"
    support_views: str = "paper"
    blur_sigma: float = 4.0
    # a seeded random subset of the embedding's channels (as PaDiM): the covariances at 56×56
    # positions of all 448 ResNet-18 channels take 2.5 GB in fp32; None = all channels
    channels: int | None = None
    image_size: int = 224
    epochs: int = 50
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"


# 2 CPU cores (docs/benchmarks.md): offline ImageNet weights (tf_efficientnet_lite0, stages at
# strides 4, 8, 16 like ResNet's layer1–3), fewer epochs at a larger learning rate, and 160 px,
# chosen over 128 on `fit`'s few-shot validation signal (ELPV, 3 seeds, k = 4: image AUROC
# 0.757 → 0.781, higher at 2 of 3 seeds; the test moved the same way at each seed, +2.1 on
# average) and still under 10 minutes per 300 training images on 2 cores (224 px validated
# higher at one seed, at 2.3× the time of 160). The backbone frozen at its ImageNet weights
# (`train_backbone` false): on 40 labelled cracks per ELPV category (out of the test) image
# AUROC 0.637 → 0.720 (equal at one seed, +12 points at two), on the embedded textures `fit`'s
# validation +6.5 at every seed; ELPV's synthetic validation −0.5 on the mean (−4.2 at one seed);
# the fit 41–49 % shorter. The paper's learning rate (1e-3 until 2026-12-07, a choice made for
# the trained backbone): at 1e-3 the frozen backbone's transformers learned one near-constant
# distortion for every image (a 2× zoom along one axis on ELPV), and 1e-4 validated higher on
# synthetic defects at every seed (+6.5) and on labelled cracks on the mean (+5.7; −0.5 at one
# of 3 seeds) (docs/benchmarks.md, "RegAD: stages (3, 4), what the spatial transformers learn,
# and the paper's learning rate")
CPU = {
    # bf16 trains the step 1.7-1.9x faster at 160 px here (benchmarks/precision.py), but the
    # whole fit only a seventh faster and the few-shot validation fell 12 points at one of 3
    # ELPV seeds (test unchanged); 224 px in bf16 stays over the budget (docs/benchmarks.md)
    "precision": "fp32",
    "backbone": "tf_efficientnet_lite0",
    "train_backbone": False,
    "image_size": 160,
    "epochs": 10,
    "batch_size": 16,
}
# One GPU: the paper's resolution and schedule, with the offline ImageNet weights of
# tf_efficientnet_lite0 in place of the paper's ResNet-18 (which would need a download). Not a
# measured choice (it ran before few-shot fits had a validation signal): it fitted ELPV in 59 s
# on a shared H200 (docs/benchmarks.md)
GPU = {"backbone": "tf_efficientnet_lite0"}
# Seconds on a CPU, for tests and smoke runs (not for quality)
TINY = {**CPU, "image_size": 64, "epochs": 1, "batch_size": 8, "inference_batch_size": 8}

# `scoring` → the bundle's name for what `adapt` fits, and its class
SCORINGS = {
    "gaussian": ("gaussian", Gaussian),
    "nearest": ("memory", PositionMemory),
    "patches": ("patches", PatchMemory),
}

# RegAD (arXiv:2207.07361 §3.3) / official test: the 22 views of each support image
ANGLES = [s * math.pi / 16 for s in (-4, -3, -2, -1, 1, 2, 3, 4)]
SHIFTS = [(0.2, 0.2), (-0.2, 0.2), (-0.2, -0.2), (0.2, -0.2)]
SHIFTS += [(0.1, 0.1), (-0.1, 0.1), (-0.1, -0.1), (0.1, -0.1)]


# which views of each support image `adapt` models (`support_views`)
VIEW_SETS = ("paper", "small", "none")


def check_views(views: str) -> None:
    if views not in VIEW_SETS:
        raise AdformerError(f"support_views must be one of {', '.join(VIEW_SETS)}, got {views!r}")


def support_views(images: torch.Tensor, views: str = "paper") -> torch.Tensor:
    """(k, 3, S, S) → (22k, 3, S, S) with the paper's views (RegAD, arXiv:2207.07361 §3.3): the
    original, 8 small rotations (±π/16…±π/4), 8 translations (±10 %, ±20 % of the half-width),
    a horizontal flip, grey, 3 rotations by 90° (reflection padding where pixels are missing).
    ``"small"`` (not in the paper, for parts that arrive aligned): only the pose changes that
    keep them so — the original, the ±π/16 rotations, the ±10 % translations, the flip and
    grey, 9k views; ``"none"``: the k images alone."""
    check_views(views)
    if views == "none":
        return images
    k, paper = images.shape[0], views == "paper"

    def affine(a: float, b: float, c: float, d: float, tx: float, ty: float) -> torch.Tensor:
        theta = images.new_tensor([[a, b, tx], [c, d, ty]]).expand(k, 2, 3)
        return warp(images, theta)

    angles = ANGLES if paper else [t for t in ANGLES if abs(t) < math.pi / 8]
    shifts = SHIFTS if paper else [(x, y) for x, y in SHIFTS if abs(x) < 0.15]
    views = [images]
    views += [affine(math.cos(t), -math.sin(t), math.sin(t), math.cos(t), 0, 0) for t in angles]
    views += [affine(1, 0, 0, 1, tx, ty) for tx, ty in shifts]
    views.append(images.flip(-1))
    grey = (images * images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, True)
    views.append(grey.expand(-1, 3, -1, -1))
    if paper:
        views += [torch.rot90(images, r, dims=(-2, -1)) for r in (1, 2, 3)]
    return torch.cat(views)


class RegistrationNetwork(nn.Module):
    """Backbone stages, each followed by a spatial transformer; SimSiam encoder and predictor
    on the last stage (RegAD, arXiv:2207.07361 §3.2)."""

    def __init__(self, config: RegADConfig, pretrained: bool):
        super().__init__()
        extractor = build_extractor(
            config.backbone,
            config.stages,
            config.backbone_weights,
            pretrained,
            trainable=config.train_backbone,
        )
        self.train_backbone = config.train_backbone
        self.register_buffer("mean", extractor.mean.clone())
        self.register_buffer("std", extractor.std.clone())
        self.stages = nn.ModuleList(extractor.stage_modules())
        self.transformers = nn.ModuleList(
            SpatialTransformer(c, config.image_size // s, config.stn_mode)
            for c, s in zip(extractor.channels, extractor.strides, strict=True)
        )
        self.channels = extractor.channels
        width = extractor.channels[-1]

        def conv_bn_relu() -> list[nn.Module]:
            return [nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]

        # official heads: encoder 3 × 1×1 conv (BN + ReLU after the first two), predictor
        # 1×1 conv-BN-ReLU-1×1 conv
        self.encoder = nn.Sequential(
            *conv_bn_relu(), *conv_bn_relu(), nn.Conv2d(width, width, 1, bias=False)
        )
        self.predictor = nn.Sequential(*conv_bn_relu(), nn.Conv2d(width, width, 1, bias=False))

    def train(self, mode: bool = True) -> RegistrationNetwork:  # a frozen backbone stays in eval
        super().train(mode)
        if not self.train_backbone:
            self.stages.eval()
        return self

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Images in [0, 1] → warped features of every stage, and each stage's transform."""
        x = (images - self.mean) / self.std
        features, thetas = [], []
        for stage, transformer in zip(self.stages, self.transformers, strict=True):
            x, theta = transformer(stage(x))
            features.append(x)
            thetas.append(theta)
        return features, thetas

    @staticmethod
    def registered(features: list[torch.Tensor], thetas: list[torch.Tensor]):
        """Each stage's features warped back to image coordinates: stage i was computed in the
        frame of θ1…θi, so it is resampled once at θi⁻¹·…·θ1⁻¹ (the official code resamples
        i times; one composite warp is the same map with one interpolation)."""
        out, back = [], None
        for feature, theta in zip(features, thetas, strict=True):
            inverse = invert(theta)
            back = inverse if back is None else compose(inverse, back)
            out.append(warp(feature, back))
        return out


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """−cos(p, stop-grad z) per spatial position, (B, C, H, W) → (B, H, W)."""
    return -F.cosine_similarity(p, z.detach(), dim=1)


class PairBatch(NamedTuple):
    """Training pairs: query image indices (B,) and `shots` support indices of the same
    category each (B, k), into the preloaded images."""

    query: torch.Tensor
    support: torch.Tensor


class SamePairs(EpochDataset):
    """One item per training image: the image and `shots` other images of its category, drawn
    afresh each epoch from the engine's seed (with replacement if the category has few)."""

    def __init__(self, groups: Sequence[int], shots: int):
        super().__init__(len(groups), shots)
        self.groups = torch.as_tensor(groups)
        self.members = {int(g): (self.groups == g).nonzero()[:, 0] for g in self.groups.unique()}

    def __getitem__(self, index: int) -> PairBatch:
        others = self.members[int(self.groups[index])]
        others = others[others != index]
        pick = (self.u[index] * len(others)).long().clamp_max(len(others) - 1)
        return PairBatch(torch.tensor(index), others[pick])


@register("regad")
class RegAD(Detector):
    """RegAD: `adformer.create("regad", preset="cpu")`; fit on many categories, then `adapt`
    to a new one from a few good images."""

    learning_type = "few_shot"
    config_class = RegADConfig
    config: RegADConfig
    presets = {"paper": {}, "cpu": CPU, "gpu": GPU, "tiny": TINY}
    # used by `adapt` only: an unadapted model's validation can be redone with other values
    scoring_options = (
        *SCORING_OPTIONS,
        "scoring",
        "feature_pool",
        "channels",
        "covariance_eps",
        "covariance",
        "blur_sigma",
        "support_views",
    )
    # what adapt() learns: the new category's normal features (a Gaussian or the support's
    # features, by `scoring`) and which images they came from
    model_: RegistrationNetwork | None = None
    normal_: Gaussian | PositionMemory | PatchMemory | None = None
    adapted_: dict | None = None

    def _check_config(self) -> None:
        c = self.config
        if c.stn_mode not in MODES:
            raise AdformerError(f"unknown STN mode '{c.stn_mode}': choose from {', '.join(MODES)}")
        if c.shots < 1:
            raise AdformerError(f"shots must be >= 1, got {c.shots}")
        if c.scoring not in SCORINGS:
            raise AdformerError(f"scoring must be one of {', '.join(SCORINGS)}, got {c.scoring!r}")
        stride = 2 ** max(c.stages)
        if c.image_size % stride:
            raise AdformerError(f"image size {c.image_size} must be a multiple of {stride}")
        if c.channels is not None and c.channels < 1:
            raise AdformerError(f"channels must be >= 1 (or None for all), got {c.channels}")
        check_views(c.support_views)
        if c.covariance not in ESTIMATORS:
            raise AdformerError(
                f"covariance must be one of {', '.join(ESTIMATORS)}, got {c.covariance!r}"
            )
        if c.feature_pool < 1 or c.feature_pool % 2 == 0:
            raise AdformerError(f"feature_pool must be an odd number >= 1, got {c.feature_pool}")

    def _build(self, pretrained: bool) -> None:
        self.model_ = RegistrationNetwork(self.config, pretrained)

    def modules(self) -> dict[str, nn.Module]:
        modules = {"model": self.model_}
        if self.normal_ is not None:
            modules[SCORINGS[self.config.scoring][0]] = self.normal_
        return modules

    def normalisation(self) -> dict:
        return {k: getattr(self.model_, k).flatten().tolist() for k in ("mean", "std")}

    def _trainable(self) -> nn.Module:
        return self.model_

    # ----------------------------------------------------------------- training
    def _training_sets(self, train, val, device, anomalies=([], [])):
        names = sorted({s.category for s in train})
        counts = {n: sum(s.category == n for s in train) for n in names}
        few = sorted(n for n, count in counts.items() if count < 2)
        if few:
            raise AdformerError(
                f"RegAD trains on pairs of good images of one category: {few} have fewer than "
                "2 training images (after the validation hold-out)"
            )
        size, batch = self.config.image_size, self.config.inference_batch_size
        self._pixels = preload(train + val, size, batch, device)
        groups = [names.index(s.category) for s in train]
        train_set = SamePairs(groups, self.config.shots)
        # validation: each held-out image with fixed supports from its category's training images
        generator = torch.Generator().manual_seed(self.config.seed)
        queries, supports = [], []
        for offset, sample in enumerate(val):
            if sample.category not in names:
                continue
            members = train_set.members[names.index(sample.category)]
            pick = torch.randint(len(members), (self.config.shots,), generator=generator)
            queries.append(len(train) + offset)
            supports.append(members[pick])
        if not queries:
            return train_set, None
        return train_set, TypedTensorDataset(
            PairBatch, torch.tensor(queries), torch.stack(supports)
        )

    def _loss(self, model: nn.Module, batch: PairBatch) -> torch.Tensor:
        """Symmetric negative cosine (RegAD, arXiv:2207.07361 eq. 1–2): the query's prediction
        against the support's stop-gradient encoding and vice versa; support = mean over the k
        images."""
        query, support = batch
        # one forward for queries and supports (the official code runs two, so its batch-norm
        # statistics are per side; here they are shared by the pair batch)
        images = self._pixels[torch.cat([query, support.flatten()])].float().div_(255)
        last = model(images)[0][-1]
        q, s = last[: len(query)], last[len(query) :]
        s = s.view(len(query), -1, *s.shape[1:]).mean(1)
        z1, z2 = model.encoder(q), model.encoder(s)
        p1, p2 = model.predictor(z1), model.predictor(z2)
        return (negative_cosine(p1, z2).mean() + negative_cosine(p2, z1).mean()) / 2

    def _after_training(self, train: list[Sample]) -> None:
        del self._pixels

    # ----------------------------------------------------------------- adaptation
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] → registered multi-stage features (B, C, P) at stage-1
        resolution (the adapted channel subset once adapted; each averaged over its
        `feature_pool` neighbourhood): what `normal_` models."""
        features, thetas = self.model_(images)
        registered = self.model_.registered(features, thetas)
        size = registered[0].shape[-2:]
        # lower stages repeated over the cells they cover (PaDiM's embedding_concat)
        stacked = torch.cat([F.interpolate(f, size, mode="nearest") for f in registered], 1)
        index = None if self.normal_ is None else self.normal_.channel_index
        stacked = stacked if index is None else stacked[:, index]
        pool = self.config.feature_pool
        if pool > 1:  # the mean over the neighbours inside the image (no zero padding)
            stacked = F.avg_pool2d(stacked, pool, 1, pool // 2, count_include_pad=False)
        return stacked.flatten(2)

    @torch.no_grad()
    def adapt(
        self,
        support: Sequence[str | Path | Sample] | str | Path | torch.Tensor,
        normals: Sequence[str | Path | Sample] = (),
        category: str = "adapted",
        anomalies: Sequence[Sample] = (),
    ) -> RegAD:
        """Fit the per-position Gaussian (or memory, by `scoring`) of a (new) category from a
        few good images, no retraining. `support`: image paths, a folder, or a (k, 3, H, W)
        tensor in [0, 1]. `normals`, other good images of it if any, set the threshold (99th
        percentile of their scores); without them the support images' own scores do, which
        is optimistic (they are in the model). `anomalies`, labelled defective images of it,
        need `normals`: as in `fit`, the threshold is then F1-optimal between the two and
        ``validation_["labelled"]`` scores them (with only support images,
        `few_shot.support_validation` weighs them against each support image held out).

        >>> model.adapt(["good1.png", "good2.png"], normals=["good3.png"])  # doctest: +SKIP
        """
        if self.model_ is None:
            raise AdformerError("fit (or load) a RegAD model before adapting it")
        size, tile = self.config.image_size, self.config.tile
        in_memory = isinstance(support, torch.Tensor)
        samples = [] if in_memory else _samples(support, category)
        shots = len(support) if in_memory else len(samples)
        if not shots:
            raise AdformerError("adapt needs at least one good support image")
        if anomalies and not normals:
            raise AdformerError(
                "labelled defects are weighed against good images that are not support "
                "images: give normals too (few_shot.adapt holds support images out instead)"
            )
        whole = None  # with tiling, the support images at their own size
        if tile is not None:
            if in_memory:
                whole = [_to_image(i) for i in support]
            else:
                whole = [read_image(s.path) for s in samples]
            tiles = [im.crop(box) for im in whole for box in tile_boxes(*im.size, tile)]
            images = torch.stack([image_to_tensor(t, size) for t in tiles])
        elif in_memory:  # (k, 3, H, W) in [0, 1]
            images = torch.stack([_to_tensor(image, size) for image in support])
        else:
            images = preload(samples, size, len(samples), self.device_).float() / 255
        images = images.to(self.device_)
        self.model_.eval()
        views = support_views(images, self.config.support_views)
        total = sum(self.model_.channels)
        chosen = torch.arange(total)
        if self.config.channels is not None and self.config.channels < total:
            generator = torch.Generator().manual_seed(self.config.seed)
            chosen = torch.randperm(total, generator=generator)[: self.config.channels].sort()[0]
        self.normal_ = None
        embeddings = torch.cat(
            [self.embed(chunk) for chunk in views.split(self.config.inference_batch_size)]
        )[:, chosen.to(self.device_)]
        n_views, _, positions = embeddings.shape
        if self.config.scoring == "nearest":
            self.normal_ = PositionMemory(positions, n_views, len(chosen)).to(self.device_)
            self.normal_.fit(embeddings)
        elif self.config.scoring == "patches":
            self.normal_ = PatchMemory(n_views * positions, len(chosen)).to(self.device_)
            self.normal_.fit(embeddings)
        else:
            self.normal_ = Gaussian(positions, len(chosen)).to(self.device_)
            self.normal_.fit(embeddings, self.config.covariance_eps, self.config.covariance)
        self.normal_.channel_index.copy_(chosen)
        self.adapted_ = {
            "category": category,
            "shots": shots,
            "support": [str(s.path) for s in samples],
        }
        normals = _samples(normals, category)
        self.validation_ = None
        if normals:
            self._calibrate(normals, anomalies)
            return self
        scores, maps, _ = self._score_images(images) if whole is None else self._score_tiled(whole)
        self.map_low_ = float(np.median(maps))
        threshold = quantile_threshold(
            scores,
            self.config.threshold_quantile,
            f"the {len(scores)} support images' scores (optimistic: they are in the model)",
        )
        self.threshold_, self.threshold_source_ = threshold.value, threshold.source
        return self

    def _maps(self, images: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        return self._distance_map(self.normal_.distance(self.embed(images)), images.shape[-2:])

    def graph(self) -> InferenceGraph:
        """As `Detector.graph`, with a Gaussian as constants (the inverse Cholesky factor), so
        the Mahalanobis map is computed in the exported graph (a memory exports as it is)."""
        self._check_fitted()
        if not isinstance(self.normal_, Gaussian):
            return super().graph()
        product = GaussianProduct(self.normal_)

        def maps(images: torch.Tensor) -> torch.Tensor:
            return self._distance_map(product(self.embed(images)), images.shape[-2:])

        return InferenceGraph(self, maps, constants=product)

    def _distance_map(self, distance: torch.Tensor, size) -> torch.Tensor:
        """(B, P) distances → (B, S, S) map: upsampled, then Gaussian-blurred (σ = 4, as
        PaDiM's and RegAD's official scoring)."""
        side = int(math.isqrt(distance.shape[1]))
        maps = distance.view(-1, 1, side, side)
        maps = F.interpolate(maps, size, mode="bilinear", align_corners=False)
        sigma = self.config.blur_sigma
        kernel = 2 * math.ceil(4 * sigma) + 1  # scipy's gaussian_filter reach (truncate=4)
        return gaussian_blur2d(maps, kernel, (sigma, sigma), border_type="reflect")[:, 0]

    # ----------------------------------------------------------------- state
    def default_test_categories(self) -> list[str]:
        """An adapted model is tested on the category it was adapted to, never on the ones it
        was trained on."""
        self._check_fitted()
        return [self.adapted_["category"]]

    def _check_fitted(self) -> None:
        if self.normal_ is None:
            raise AdformerError(
                "this RegAD model is not adapted to a category: adapt it to a few good images "
                "first (adformer adapt RUN --data DIR --shots K --out ADAPTED, or .adapt())"
            )

    def fitted_state(self) -> dict:
        state = super().fitted_state()
        if self.normal_ is not None:
            state["adapted"] = {**self.adapted_, **self.normal_.shape}
        return state

    def _restore_state(self, state: dict) -> None:
        super()._restore_state(state)
        if "adapted" in state:
            adapted = state["adapted"]
            self.adapted_ = {k: adapted[k] for k in ("category", "shots", "support")}
            normal = SCORINGS[self.config.scoring][1]
            self.normal_ = normal(**{k: adapted[k] for k in normal.SHAPE})


def _samples(items, category: str) -> list[Sample]:
    if isinstance(items, (str, Path)):
        items = [items]
    out = []
    for item in items:
        if isinstance(item, Sample):
            out.append(item)
        else:
            out += [Sample(p, category) for p in list_images([item])]
    return out
