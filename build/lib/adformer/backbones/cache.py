"""Feature caching for frozen backbones: compute each training image's features once.

Valid only when the backbone is frozen and training uses no augmentation (UniAD, ADTR): the
transformer then trains on the cache, many times faster than re-running the CNN every epoch.
Beyond a memory budget the caller falls back to computing features on the fly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

from adformer import distributed
from adformer.data.dataset import ImageDataset, TypedTensorDataset, loader
from adformer.data.types import FeatureBatch, ImageBatch, Sample


class ImageTensors(Dataset):
    """`ImageBatch` items of samples (the on-the-fly fallback's training set)."""

    def __init__(self, samples: Sequence[Sample], size: int):
        self.images = ImageDataset(samples, size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> ImageBatch:
        return ImageBatch(self.images[index]["image"])


@torch.no_grad()
def cache_features(
    features: Callable[[torch.Tensor], torch.Tensor],
    samples: Sequence[Sample],
    size: int,
    bytes_per_image: int,
    budget_bytes: float,
    device: torch.device,
    batch_size: int = 16,
) -> Dataset:
    """`FeatureBatch` items on the CPU if they fit in `budget_bytes`, else `ImageTensors`.
    Under torchrun each process computes its share of the images and they exchange them, so
    the backbone runs once per image in all."""
    if not samples or len(samples) * bytes_per_image > budget_bytes:
        return ImageTensors(samples, size)
    share = samples[distributed.shard(len(samples))]
    chunks = [
        features(batch.images.to(device)).float().cpu() for batch in loader(share, size, batch_size)
    ]
    parts = distributed.gather(torch.cat(chunks) if chunks else None)
    return TypedTensorDataset(FeatureBatch, torch.cat([p for p in parts if p is not None]))
