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
        stages' features one by one (so something can be inserted between them)."""
        from timm.models._features import FeatureDictNet

        model = self.model
        if isinstance(model, FeatureDictNet):
            pieces, current = [], []
            for name, module in model.items():
                current.append(module)
                if name in model.return_layers:
                    pieces.append(nn.Sequential(*current))
                    current = []
            return pieces
        if hasattr(model, "_stage_out_idx"):  # timm's EfficientNetFeatures
            ends = sorted(model._stage_out_idx)
            pieces, start = [], 0
            for end in ends:
                head = [model.conv_stem, model.bn1] if start == 0 else []
                pieces.append(nn.Sequential(*head, *model.blocks[start:end]))
                start = end
            return pieces
        raise AdformerError(f"backbone '{self.name}' cannot be split into stages for RegAD")

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.model(self.normalise(images))

    def aligned(self, images: torch.Tensor, stride: int) -> torch.Tensor:
        """All stages resized bilinearly to ``image_size / stride`` and concatenated.

        align_corners=True as in UniAD's official MFCN neck (nn.UpsamplingBilinear2d).
        """
        size = (images.shape[-2] // stride, images.shape[-1] // stride)
        maps = [
            f
            if f.shape[-2:] == size
            else F.interpolate(f, size, mode="bilinear", align_corners=True)
            for f in self(images)
        ]
        return torch.cat(maps, dim=1)


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
