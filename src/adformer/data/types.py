"""Typed records that flow from files to methods and out of them: one image (`Sample`), a
batch of them, the kinds of training batch a method's loss is chosen by, and the
`Prediction` a detector returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:  # torch-free at run time: the ONNX runtime shares `Prediction`
    import torch
    from PIL import Image


@dataclass(frozen=True)
class Sample:
    """One image on disk and what is known about it."""

    path: Path
    category: str
    label: int = 0  # 0 good, 1 anomalous
    defect: str = "good"
    mask_path: Path | None = None
    box: tuple[int, int, int, int] | None = None  # a region (left, top, right, bottom): a tile

    @property
    def name(self) -> str:
        return f"{self.category}/{self.defect}/{self.path.name}"


@dataclass
class CategoryData:
    """The train and test samples of one category; `has_masks` says if pixel metrics apply."""

    name: str
    train: list[Sample]
    test: list[Sample]
    has_masks: bool
    anomalies: list[Sample] = field(default_factory=list)  # labelled defects usable in training


@dataclass
class Batch:
    """A collated batch: images in [0, 1] at the model's size (or, from a ``whole`` loader,
    as decoded: RGB PIL images at their own size, for tiled scoring), masks where known."""

    images: torch.Tensor | list[Image.Image]  # (B, 3, S, S) float, or B PIL images
    labels: torch.Tensor  # (B,) long
    masks: torch.Tensor  # (B, S, S) bool; all False where no mask is known
    has_mask: torch.Tensor  # (B,) bool
    paths: list[str]
    categories: list[str]

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class Prediction:
    """Scores and maps for N images, maps at the model's input resolution: what
    `Detector.predict` and the ONNX runtime's `predict` return."""

    scores: np.ndarray  # (N,)
    maps: np.ndarray  # (N, S, S) float32
    anomalous: np.ndarray  # (N,) bool, score > threshold
    paths: list[str]
    skipped: list[str]
    # (N, S, S, 3) uint8, what the model thinks the images should look like (InTra), when asked
    reconstructions: np.ndarray | None = None


# Training batches. Each kind is a NamedTuple of tensors (torch's default collate keeps the
# type), so a loss dispatches on the batch's type, never on its shape.


class FeatureBatch(NamedTuple):
    """Cached backbone features of good images, (B, C, h, w)."""

    features: torch.Tensor


class ImageBatch(NamedTuple):
    """Good images in [0, 1], (B, 3, S, S): features are computed on the fly."""

    images: torch.Tensor


class LabelledFeatureBatch(NamedTuple):
    """Features with labels, for methods that also learn from anomalies (ADTR+)."""

    features: torch.Tensor  # (B, C, h, w)
    target: torch.Tensor  # (B, h, w) defect fraction of each feature cell
    has_mask: torch.Tensor  # (B,) bool: pixel labels known (always for good images)
    label: torch.Tensor  # (B,) float, 1 anomalous
