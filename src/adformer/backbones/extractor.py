"""Multi-stage feature extractor over any timm model (``features_only``): frozen for the
feature-reconstruction methods, trainable and split into stages for RegAD."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from adformer.backbones.weights import BackboneWeights, resolve_weights
from adformer.errors import AdformerError


class FeatureExtractor(nn.Module):
    """ImageNet features of stages `stages` (1 = stride 2, ..., 5 = stride 32), frozen.

    Inputs are RGB in [0, 1]; the weights' own mean/std are applied inside, so callers never
    normalise. With ``weights=None`` the network is randomly initialised (its state is
    expected to be loaded afterwards, e.g. from a bundle).

    >>> fx = build_extractor("tf_efficientnet_lite0", (1, 2, 3, 4))  # doctest: +SKIP
    >>> fx.aligned(images, stride=16).shape  # (B, 192, 14, 14) for 224 px
    """

    def __init__(
        self,
        name: str,
        stages: Sequence[int],
        weights: BackboneWeights | None = None,
        trainable: bool = False,
    ):
        super().__init__()
        import timm

        if name not in timm.list_models():
            raise AdformerError(f"unknown backbone '{name}': use a timm model name")
        self.name = name
        self.stages = tuple(stages)
        try:
            self.model = timm.create_model(
                name, pretrained=False, features_only=True, out_indices=[s - 1 for s in stages]
            )
        except (IndexError, ValueError) as error:
            raise AdformerError(
                f"backbone '{name}' has no stages {list(stages)}: {error}"
            ) from error
        self._keep_needed_blocks()
        mean, std = (weights.mean, weights.std) if weights else ((0.5,) * 3, (0.5,) * 3)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        if weights is not None:
            wanted = [k for k in self.model.state_dict() if not k.endswith("num_batches_tracked")]
            self.model.load_state_dict({k: weights.state_dict[k] for k in wanted}, strict=False)
        self.trainable = trainable
        if not trainable:
            self.requires_grad_(False)
            self.eval()

    def _keep_needed_blocks(self) -> None:
        """Drop the blocks after the last returned stage. timm's EfficientNet and MobileNet
        feature models run every block whatever `out_indices` asks, so stages 1-4 (UniAD's,
        down to stride 16) or RegAD's 2-4 also ran the two stride-32 blocks: for UniAD's
        Lite1, 73 % of the backbone's weights and 30 % of its FLOPs, for nothing. Other timm
        feature models (`FeatureListNet`) already end at the last returned stage. Bundles
        written before still load: the dropped blocks' weights in them are ignored."""
        blocks = getattr(self.model, "blocks", None)
        last = self.model.feature_info.module_name()[-1].split(".")
        if not isinstance(blocks, nn.Sequential) or last[0] != "blocks" or len(last) != 2:
            return
        kept = int(last[1]) + 1
        self.model.blocks = blocks[:kept]

        def ignore_dropped(module, state_dict, prefix, *args) -> None:
            start = prefix + "model.blocks."
            for key in [k for k in state_dict if k.startswith(start)]:
                if int(key[len(start) :].split(".")[0]) >= kept:
                    del state_dict[key]

        self.register_load_state_dict_pre_hook(ignore_dropped)

    @property
    def channels(self) -> list[int]:
        return list(self.model.feature_info.channels())

    @property
    def strides(self) -> list[int]:
        return list(self.model.feature_info.reduction())

    def train(self, mode: bool = True) -> FeatureExtractor:  # frozen: batch-norm stays in eval
        return super().train(mode and self.trainable)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def stage_modules(self) -> list[nn.Module]:
        """The network cut after each returned stage: running the pieces in order gives the
        stages' features one by one (so something can be inserted between them).

        Uses only timm's public feature API: the modules named by ``feature_info`` end the
        pieces, and the children of the ``features_only`` model are run in order (true of
        timm's ResNets and EfficientNets; checked on a random image, else a clear error)."""
        ends = list(self.model.feature_info.module_name())
        pieces: list[nn.Module] = []
        current: list[nn.Module] = []

        def walk(module: nn.Module, prefix: str) -> None:
            for name, child in module.named_children():
                if len(pieces) == len(ends):
                    return
                full = prefix + name
                if any(e.startswith(full + ".") for e in ends):  # a stage ends inside it
                    walk(child, full + ".")
                    continue
                current.append(child)
                # timm's flattened feature wrappers name module "layer.1" "layer_1"
                if full in ends or full.replace("_", ".") in ends:
                    pieces.append(nn.Sequential(*current))
                    current.clear()

        walk(self.model, "")
        if len(pieces) != len(ends) or not self._pieces_match(pieces):
            raise AdformerError(f"backbone '{self.name}' cannot be split into stages for RegAD")
        return pieces

    @torch.no_grad()
    def _pieces_match(self, pieces: list[nn.Module]) -> bool:
        was_training = self.training
        self.eval()
        x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        expected = self.model(x)
        outputs = []
        for piece in pieces:
            x = piece(x)
            outputs.append(x)
        self.train(was_training)
        return all(
            a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
            for a, b in zip(outputs, expected, strict=True)
        )

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.model(self.normalise(images))

    def aligned(
        self, images: torch.Tensor, stride: int, downsample: str = "bilinear"
    ) -> torch.Tensor:
        """All stages resized to ``image_size / stride`` and concatenated: coarser stages
        upsampled bilinearly, finer ones downsampled by `downsample` (`align_stages`)."""
        size = (images.shape[-2] // stride, images.shape[-1] // stride)
        return torch.cat(align_stages(self(images), size, downsample), dim=1)


# how `aligned` brings a finer stage down to the feature grid
DOWNSAMPLING = ("bilinear", "area")


def check_downsample(downsample: str) -> None:
    if downsample not in DOWNSAMPLING:
        raise AdformerError(
            f"unknown downsample '{downsample}': choose from {', '.join(DOWNSAMPLING)}"
        )


def align_stages(
    maps: Sequence[torch.Tensor], size: tuple[int, int], downsample: str = "bilinear"
) -> list[torch.Tensor]:
    """Each map resized to `size`. Upsampling is bilinear with align_corners=True, as UniAD's
    official MFCN neck (nn.UpsamplingBilinear2d). So is downsampling with ``"bilinear"`` (the
    neck's): it reads one point every few pixels, so a defect thinner than that gap can fall
    between the points read. ``"area"`` (not in the papers) takes the mean over each cell of
    the grid instead, so every position of the finer stage counts."""
    check_downsample(downsample)
    resized = []
    for f in maps:
        if f.shape[-2:] == size:
            resized.append(f)
        elif downsample == "area" and f.shape[-2] >= size[0] and f.shape[-1] >= size[1]:
            resized.append(F.adaptive_avg_pool2d(f, size))
        else:
            resized.append(F.interpolate(f, size, mode="bilinear", align_corners=True))
    return resized


def build_extractor(
    name: str,
    stages: Sequence[int],
    weights_file: str | None = None,
    pretrained: bool = True,
    trainable: bool = False,
) -> FeatureExtractor:
    """An extractor with resolved ImageNet weights (or none, when a bundle will supply them)."""
    weights = resolve_weights(name, weights_file) if pretrained else None
    return FeatureExtractor(name, stages, weights, trainable)
