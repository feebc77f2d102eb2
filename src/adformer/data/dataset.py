"""Samples → tensors: a torch `Dataset` that resizes images (bilinear) and masks (nearest)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from adformer.data.images import image_to_array, read_mask, read_region
from adformer.data.types import Batch, Sample
from adformer.errors import AdformerError


def image_to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """RGB PIL image → (3, size, size) float tensor in [0, 1] (`image_to_array`)."""
    return torch.from_numpy(image_to_array(image, size))


class ImageDataset(Dataset):
    """Images (and masks) of a list of samples at `size`×`size`.

    With ``skip_unreadable`` a broken file is reported with a warning and left out of the batch
    (prediction); otherwise it raises `AdformerError` naming it (training must not silently
    learn from fewer images than the user gave). With ``whole`` the images stay as decoded
    (PIL, their own size; tiled scoring), the masks are still resized.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        size: int,
        skip_unreadable: bool = False,
        whole: bool = False,
    ):
        self.samples = list(samples)
        self.size = size
        self.skip_unreadable = skip_unreadable
        self.whole = whole

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict | None:
        sample = self.samples[index]
        try:
            image = read_region(sample.path, sample.box)
        except AdformerError as error:
            if self.skip_unreadable:
                warnings.warn(f"skipped: {error}", stacklevel=2)
                return None
            raise
        mask = torch.zeros(self.size, self.size, dtype=torch.bool)
        if sample.mask_path is not None:
            array = read_mask(sample.mask_path)
            if sample.box is not None:
                left, top, right, bottom = sample.box
                array = array[top:bottom, left:right]
            if array.shape != (image.height, image.width):
                raise AdformerError(
                    f"mask {sample.mask_path} is {array.shape[::-1]} but its image "
                    f"{sample.path} is {image.size}"
                )
            resized = Image.fromarray(array.astype(np.uint8) * 255).resize(
                (self.size, self.size), Image.NEAREST
            )
            mask = torch.from_numpy(np.asarray(resized) > 0)
        return {
            "image": image if self.whole else image_to_tensor(image, self.size),
            "label": sample.label,
            "mask": mask,
            "has_mask": sample.mask_path is not None,
            "path": str(sample.path),
            "category": sample.category,
        }


class TypedTensorDataset(Dataset):
    """Like `TensorDataset`, but each item is a `kind` (a NamedTuple of the tensors' rows), so
    batches arrive typed (see `adformer.data.types`)."""

    def __init__(self, kind: type, *tensors: torch.Tensor):
        if any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("all tensors need the same first dimension")
        self.kind, self.tensors = kind, tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: int):
        return self.kind(*(t[index] for t in self.tensors))


def collate(items: list[dict | None], whole: bool = False) -> Batch | None:
    """`ImageDataset` items → one `Batch` (``whole``: its images stay a list of PIL images)."""
    items = [item for item in items if item is not None]
    if not items:
        return None
    images = [i["image"] for i in items]
    return Batch(
        images=images if whole else torch.stack(images),
        labels=torch.tensor([i["label"] for i in items], dtype=torch.long),
        masks=torch.stack([i["mask"] for i in items]),
        has_mask=torch.tensor([i["has_mask"] for i in items], dtype=torch.bool),
        paths=[i["path"] for i in items],
        categories=[i["category"] for i in items],
    )


def loader(
    samples: Sequence[Sample],
    size: int,
    batch_size: int,
    workers: int = 0,
    skip_unreadable: bool = False,
    whole: bool = False,
) -> DataLoader:
    """A sequential loader of `Batch`es (``None`` for a batch whose images were all skipped);
    ``whole``: images as decoded, not resized (`ImageDataset`)."""
    return DataLoader(
        ImageDataset(samples, size, skip_unreadable, whole),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=functools.partial(collate, whole=whole),
    )


def preload(
    samples: Sequence[Sample], size: int, batch_size: int, device: torch.device
) -> torch.Tensor:
    """All images as one (N, 3, size, size) uint8 tensor on `device`: for methods that cut
    many random crops or pairs per image per epoch (InTra, RegAD)."""
    parts = [batch.images for batch in loader(samples, size, batch_size)]
    return torch.cat(parts).mul_(255).round_().to(torch.uint8).to(device)
