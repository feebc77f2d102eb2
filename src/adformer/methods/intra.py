"""InTra, the Inpainting Transformer (InTra, arXiv:2104.13897): trained from scratch on pixels, one
model per category. A covered K×K patch is inpainted from the other patches of an L×L window; every
patch of a test image is inpainted in the window that centres it, and the GMS difference between the
image and its reconstruction, against the mean over the training images, is the anomaly map.

>>> detector = adformer.create("intra", preset="cpu").fit("mvtec/carpet")  # doctest: +SKIP
>>> detector.reconstruct(images)  # what the model thinks the parts should look like
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adformer.data.dataset import TypedTensorDataset, preload
from adformer.data.types import Sample
from adformer.engine import EpochDataset
from adformer.errors import AdformerError
from adformer.methods.base import Detector, DetectorConfig, _as_categories
from adformer.methods.registry import register
from adformer.nn.inpainting_transformer import InpaintingTransformer
from adformer.nn.similarity import blur_average, gms, ssim_map

DIHEDRAL = 8  # 4 rotations × {no flip, flip}


@dataclass
class InTraConfig(DetectorConfig):
    """Defaults are the paper's (InTra, arXiv:2104.13897 §4.1); ``image_size="auto"`` is its size
    selection."""

    image_size: int | str = "auto"
    patch_size: int = 16  # K
    window: int = 7  # L
    dim: int = 512  # D
    depth: int = 13  # n
    heads: int = 8
    feature_attention: bool = True  # MFSA; False = standard MSA (the paper's ablation)
    # initial values of the learned 1-D position embedding: "normal" (ViT's, std 0.02; the
    # paper does not say) or "sincos" (2-D sine-cosine of the patch's row and column)
    position_init: str = "normal"
    # what the head reads: "mean" over all output tokens (the paper's) or the "covered" token's
    readout: str = "mean"
    long_residual: bool = True
    loss_alpha: float = 0.01  # weight of 1 − GMS
    loss_beta: float = 0.01  # weight of 1 − SSIM
    windows_per_image: int = 600  # random windows per training image per epoch
    # not in the paper: when set, each epoch draws this many windows spread evenly over the
    # training images, whatever their number, instead of `windows_per_image` each; the fit then
    # costs the same optimiser steps (epochs × windows_per_epoch / batch_size) for any category
    windows_per_epoch: int | None = None
    augment: bool = True  # random rotation (multiples of 90°) and flips
    # InTra (arXiv:2104.13897 §4.1): train 256/320/512 for 200 epochs; the smallest size whose best
    # validation loss (mean over ±5 epochs) is not beaten by >= 1e-4 by the next size
    auto_sizes: tuple[int, ...] = (256, 320, 512)
    auto_epochs: int = 200
    auto_smooth: int = 5
    auto_min_gain: float = 1e-4
    blur_sigma: float = 2.0
    # not in the paper: divide the map (eq. 7) by its mean over the training images at each
    # pixel, i.e. the variance of the diff there, so that pixels whose reconstruction is always
    # poor (edges, busbars, grain) do not outscore defects elsewhere
    normalise_map: bool = False
    blur_kernels_512: tuple[int, int] = (21, 11)  # scales 1/2 and 1/4 at 512 px, scaled linearly
    inference_batch_size: int = 8
    # optimisation: Adam 1e-4, batch 256, until 50 epochs without validation improvement
    epochs: int = 100_000
    patience: int | None = 50
    batch_size: int = 256
    optimizer: str = "adam"
    lr: float = 1e-4
    schedule: str = "constant"


# 2 CPU cores (docs/benchmarks.md): the same architecture, smaller in every direction. A fixed
# 6,000 training windows per epoch, whatever the category's size, keeps a 300-image category
# inside 10 minutes here (100 windows per image took twice that); among the variants inside that
# budget it validated highest. The map divided by its training variance at each pixel
# (`normalise_map`) validated higher than the paper's on both categories at each of 3 seeds
# (ELPV: image AUROC 0.711 vs 0.653; the test 0.783 vs 0.694), the image score staying the map's
# maximum. Trained in bf16 where the CPU computes it (`precision` "auto", the default): the fit
# 36 % shorter on ELPV (299 s vs 470 s for 2 × 135 cells), validation within 0.3 points of fp32's
# at each of 3 seeds; the time bf16 frees spent on 15,000 windows per epoch validated within
# noise, so 6,000 stay
CPU = {
    "image_size": 128,
    "patch_size": 8,
    "dim": 96,
    "depth": 5,
    "heads": 4,
    "windows_per_epoch": 6000,
    "normalise_map": True,
    "epochs": 15,
    "patience": 5,
    "batch_size": 128,
    "lr": 5e-4,
    "auto_sizes": (128, 160, 256),
    "auto_epochs": 5,
}


def window_origin(index: torch.Tensor | int, grid: int, window: int):
    """InTra (arXiv:2104.13897 eq. 4–5) with 0-based indices: the first patch row (or column) of the
    window that centres patch `index` as much as the grid of `grid` patches allows.

    Paper (1-based): g(c) = max(1, c − ⌊L/2⌋); r = g(t) − max(0, g(t) + L − N − 1).
    """
    g = np.maximum(0, np.asarray(index) - window // 2)
    return g - np.maximum(0, g + window - grid)


def patchify(images: torch.Tensor, k: int) -> torch.Tensor:
    """(B, C, H, W) → (B, N·M, K·K·C), row-major over the patch grid."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // k, k, w // k, k).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // k) * (w // k), k * k * c)


def unpatchify(patches: torch.Tensor, k: int, n: int, m: int) -> torch.Tensor:
    """(B, N·M, K·K·C) → (B, C, N·K, M·K)."""
    b = patches.shape[0]
    x = patches.reshape(b, n, m, k, k, -1).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, -1, n * k, m * k)


def dihedral(x: torch.Tensor, op: int) -> torch.Tensor:
    """One of the 8 rotations/flips of the last two dims (op 0 = identity)."""
    if op >= 4:
        x = x.flip(-1)
    return torch.rot90(x, op % 4, dims=(-2, -1))


def dihedral_inverse(x: torch.Tensor, op: int) -> torch.Tensor:
    x = torch.rot90(x, -(op % 4), dims=(-2, -1))
    return x.flip(-1) if op >= 4 else x


def dihedral_sources(n: int) -> torch.Tensor:
    """(8, 2, n, n): for each rotation/flip `op`, the row and the column of an n×n array that
    each position of its transform shows: ``dihedral(x, op)[i, j] == x[rows[i, j], cols[i, j]]``."""
    rows, cols = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    return torch.stack(
        [torch.stack([dihedral(rows, op), dihedral(cols, op)]) for op in range(DIHEDRAL)]
    )


def inference_windows(grid: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For every patch of a grid×grid image: its window's global patch indices (P, L²) and the
    patch's own index inside that window (P,), P = grid²."""
    t = np.arange(grid)
    origin = window_origin(t, grid, window)
    offsets = np.arange(window)
    rows = origin[:, None] + offsets[None, :]  # (grid, L)
    ids = rows[:, None, :, None] * grid + rows[None, :, None, :]  # (t, u, L, L)
    inside = (t - origin)[:, None] * window + (t - origin)[None, :]
    return (
        torch.from_numpy(ids.reshape(grid * grid, window * window)),
        torch.from_numpy(inside.reshape(grid * grid)),
    )


class WindowBatch(NamedTuple):
    """Training windows to cut: image index (B,) and four uniforms each (B, 4) for the window
    origin (row, column), rotation/flip and covered position."""

    index: torch.Tensor
    u: torch.Tensor


class RandomWindows(EpochDataset):
    """`count` windows spread evenly over `images` training images (item i is cut from image
    ⌊i·images/count⌋); each has four uniforms for its window (origin, rotation/flip, covered
    position), drawn afresh each epoch from the engine's seed."""

    def __init__(self, images: int, count: int):
        super().__init__(count, 4)
        self.images = images

    def __getitem__(self, index: int) -> WindowBatch:
        return WindowBatch(torch.tensor(index * self.images // self.count), self.u[index])


# One GPU: the `cpu` network with 250 windows per image each epoch (75,000 for 300 images against
# `cpu`'s 6,000), batch 64, lr 1e-3 and no early stop; ~21 s per epoch of 150 images on an H200
# shared by two fits. Chosen on `fit`'s validation signal (synthetic checker + dots,
# docs/benchmarks.md): it left the plateau where the `cpu` preset did not (validation image
# AUROC 0.58 vs 0.51; 886 s on 2 CPU cores for 108 images, too slow for the `cpu` preset). The
# paper's network (256 px, K 16, D 512, 13 blocks) was still on its plateau after 13 of 15
# epochs of one 60-image texture on an H200, ~10 s each: 10 minutes buy ~12 such epochs of 300
# images.
GPU = {
    **CPU,
    "lr": 1e-3,
    "batch_size": 64,
    "patience": None,
    "windows_per_epoch": None,
    "windows_per_image": 250,
}

# Seconds on a CPU, for tests and smoke runs (not for quality), in fp32 on every machine
TINY = {
    **CPU,
    "precision": "fp32",
    "image_size": 48,
    "patch_size": 8,
    "window": 5,
    "dim": 16,
    "depth": 2,
    "heads": 2,
    "windows_per_epoch": None,
    "windows_per_image": 8,
    "epochs": 2,
    "auto_sizes": (48, 64),
    "auto_epochs": 1,
}


@register("intra")
class InTra(Detector):
    """InTra: `adformer.create("intra", preset="cpu")`; defaults are the paper's."""

    config_class = InTraConfig
    config: InTraConfig
    learning_type = "one_class"
    presets = {"paper": {}, "cpu": CPU, "gpu": GPU, "tiny": TINY}
    reconstructs = True
    image_size_selection_: dict[str, float] | None = None  # validation loss per size ("auto")

    # ----------------------------------------------------------------- configuration
    def _sizes(self) -> tuple[int, ...]:
        size = self.config.image_size
        return tuple(self.config.auto_sizes) if size == "auto" else (size,)

    def _check_config(self) -> None:
        c = self.config
        if not (isinstance(c.image_size, int) or c.image_size == "auto"):
            raise AdformerError(f"image_size must be a number or 'auto', got {c.image_size!r}")
        for size in self._sizes():
            if size % c.patch_size:
                raise AdformerError(f"image size {size} is not a multiple of patch {c.patch_size}")
            if size // c.patch_size < c.window:
                raise AdformerError(
                    f"image size {size} gives a {size // c.patch_size}-patch grid, smaller than "
                    f"the {c.window}x{c.window} window: use a larger image or smaller patches"
                )
        if c.position_init not in ("normal", "sincos"):
            raise AdformerError(
                f"position_init must be 'normal' or 'sincos', got {c.position_init!r}"
            )
        if c.readout not in ("mean", "covered"):
            raise AdformerError(f"readout must be 'mean' or 'covered', got {c.readout!r}")
        if c.windows_per_image < 1:
            raise AdformerError("windows_per_image must be >= 1")
        if c.windows_per_epoch is not None and c.windows_per_epoch < 1:
            raise AdformerError("windows_per_epoch must be >= 1 (or None: windows_per_image each)")
        qk = c.dim // 2 if c.feature_attention else c.dim
        if c.dim % c.heads or qk % c.heads:
            raise AdformerError(f"dim {c.dim} (and {qk} for queries/keys) must divide by heads")

    @property
    def grid(self) -> int:
        return self.config.image_size // self.config.patch_size

    def _build(self, pretrained: bool) -> None:
        c = self.config
        self.network_ = InpaintingTransformer(
            patch_dim=c.patch_size**2 * 3,
            positions=self.grid**2,
            dim=c.dim,
            depth=c.depth,
            heads=c.heads,
            feature_attention=c.feature_attention,
            long_residual=c.long_residual,
            position_init=c.position_init,
            readout=c.readout,
        )
        # mean difference map of the training images (InTra, arXiv:2104.13897 eq. 7), stored in the
        # bundle
        self.stats_ = nn.Module()
        self.stats_.register_buffer("mean_diff", torch.zeros(c.image_size, c.image_size))
        if c.normalise_map:
            self.stats_.register_buffer("map_var", torch.ones(c.image_size, c.image_size))
        ids, inside = inference_windows(self.grid, c.window)
        self._windows = ids, inside
        # global indices f(i, j), inverse-rotated once per rotation/flip: a training window cut
        # from the image and then rotated carries the rotated image's indices
        grid = torch.arange(self.grid**2).reshape(self.grid, self.grid)
        self._rotated_ids = torch.stack([dihedral_inverse(grid, op) for op in range(DIHEDRAL)])
        # where each pixel of a rotated/flipped window (and each patch of its L×L grid) comes
        # from: cutting through these rotates as it cuts, for a whole batch of mixed rotations
        self._crop_sources = dihedral_sources(c.window * c.patch_size)
        self._window_sources = dihedral_sources(c.window)

    def modules(self) -> dict[str, nn.Module]:
        return {"network": self.network_, "stats": self.stats_}

    def _trainable(self) -> nn.Module:
        return self.network_

    # ----------------------------------------------------------------- training
    def _training_sets(self, train, val, device, anomalies=([], [])):
        # the training images live on the device as uint8; windows are cut per batch
        size = self.config.image_size
        self._pixels = preload(train + val, size, self.config.inference_batch_size, device)
        self._rotated_ids, self._crop_sources, self._window_sources = (
            t.to(device) for t in (self._rotated_ids, self._crop_sources, self._window_sources)
        )
        generator = torch.Generator().manual_seed(self.config.seed)
        total = self.config.windows_per_epoch or len(train) * self.config.windows_per_image
        per_image = max(1, round(total / len(train)))  # for the held-out images
        val_u = torch.rand(len(val) * per_image, 4, generator=generator)
        val_u[:, 2] = 0  # validation windows are not rotated
        val_index = len(train) + torch.arange(len(val)).repeat_interleave(per_image)
        return RandomWindows(len(train), total), TypedTensorDataset(WindowBatch, val_index, val_u)

    def _windows_of(self, index: torch.Tensor, u: torch.Tensor):
        """Cut the training windows a batch describes: (B, C, LK, LK) pixels, (B, L²) global
        indices, (B,) covered position. Every window origin is equally likely, the last
        included; the covered position is uniform over the window. Each window is cut already
        rotated/flipped (through `dihedral_sources`), so a batch needs no loop over rotations
        and no host-device synchronisation."""
        c, k, window = self.config, self.config.patch_size, self.config.window
        span = self.grid - window + 1
        r = (u[:, 0] * span).long().clamp_max(span - 1)[:, None, None]
        s = (u[:, 1] * span).long().clamp_max(span - 1)[:, None, None]
        op = (u[:, 2] * DIHEDRAL).long().clamp_max(DIHEDRAL - 1) if c.augment else 0 * r[:, 0, 0]
        covered = (u[:, 3] * window**2).long().clamp_max(window**2 - 1)
        rows, cols = self._crop_sources[op].unbind(1)  # (B, LK, LK) each
        crops = self._pixels[index[:, None, None], :, r * k + rows, s * k + cols]
        crops = crops.permute(0, 3, 1, 2).float().div_(255)  # (B, C, LK, LK)
        rows, cols = self._window_sources[op].unbind(1)  # (B, L, L) each
        ids = self._rotated_ids[op[:, None, None], r + rows, s + cols]
        return crops, ids.flatten(1), covered

    def _loss(self, network: nn.Module, batch: WindowBatch) -> torch.Tensor:
        crops, ids, covered = self._windows_of(batch.index, batch.u)
        k = self.config.patch_size
        patches = patchify(crops, k)
        target = patches[torch.arange(len(covered), device=covered.device), covered]
        predicted = network(patches, ids, covered)
        return self.patch_loss(predicted, target)

    def patch_loss(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """InTra (arXiv:2104.13897 eq. 3) on flattened patches (B, K²C):
        L2 + α·mean(1 − GMS) + β·mean(1 − SSIM), GMS and SSIM averaged over channels."""
        k = self.config.patch_size
        x = unpatchify(predicted[:, None].float(), k, 1, 1)
        y = unpatchify(target[:, None].float(), k, 1, 1)
        return (
            F.mse_loss(x, y)
            + self.config.loss_alpha * (1 - gms(x, y)).mean()
            + self.config.loss_beta * (1 - ssim_map(x, y)).mean()
        )

    def _after_training(self, train: list[Sample]) -> None:
        """The training images' mean diff map (eq. 7), and with `normalise_map` its variance
        at each pixel."""
        del self._pixels
        mean, variance = self._pixel_moments(self._diff(x)[1] for x in self._image_batches(train))
        self.stats_.mean_diff.copy_(mean)
        if self.config.normalise_map:
            self.stats_.map_var.copy_(variance)

    # ----------------------------------------------------------------- inference
    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] → the full inpainted reconstruction (B, 3, S, S)."""
        self.network_.eval()
        return self._diff(images.to(self.device_))[0]

    def _inpaint_all(self, images: torch.Tensor) -> torch.Tensor:
        """Every patch inpainted in the window that centres it (InTra, arXiv:2104.13897 eq. 4–5):
        the patch embeddings of each image are computed once and gathered into its N² windows, and
        all windows of the batch go through the network in one forward pass."""
        k, grid = self.config.patch_size, self.grid
        ids, inside = (t.to(images.device) for t in self._windows)
        patches = patchify(images, k)  # (B, P, K²C)
        batch, positions = patches.shape[:2]
        tokens = self.network_.embed(patches, torch.arange(positions, device=images.device))
        windows = tokens[:, ids].flatten(0, 1)  # (B·P, L², D)
        window_ids = ids.repeat(batch, 1)
        out = self.network_.inpaint(windows, window_ids, inside.repeat(batch))
        return unpatchify(out.reshape(batch, positions, -1), k, grid, grid)

    def _kernels(self) -> tuple[int, int]:
        size = self.config.image_size
        return tuple(max(3, round(k * size / 512) | 1) for k in self.config.blur_kernels_512)

    def _diff(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction and the diff map of InTra (arXiv:2104.13897 eq. 6): mean over scales 1/2
        and 1/4 of the blurred 1 − GMS, each resized back to the image."""
        recon = self._inpaint_all(images)
        size = images.shape[-2:]
        maps = []
        for scale, kernel in zip((0.5, 0.25), self._kernels(), strict=True):

            def resize(x: torch.Tensor, s: float = scale) -> torch.Tensor:
                return F.interpolate(x, scale_factor=s, mode="bilinear", antialias=True)

            m = blur_average(1 - gms(resize(images), resize(recon)), kernel, self.config.blur_sigma)
            maps.append(F.interpolate(m[:, None], size, mode="bilinear")[:, 0])
        return recon, (maps[0] + maps[1]) / 2

    def _outputs(self, images: torch.Tensor, reconstruct: bool) -> tuple[torch.Tensor, ...]:
        """InTra (arXiv:2104.13897 eq. 7): map = (diff − mean training diff)² (with
        `normalise_map`, divided by its training mean at each pixel); the image score is its
        max."""
        recon, diff = self._diff(images)
        maps = (diff - self.stats_.mean_diff).square()
        if self.config.normalise_map:
            maps = maps / self.stats_.map_var
        return (maps, recon) if reconstruct else (maps,)

    def _maps(self, images: torch.Tensor) -> torch.Tensor:
        return self._outputs(images, reconstruct=False)[0]

    # ----------------------------------------------------------------- image size selection
    def fit(self, data, **kwargs) -> InTra:
        """As `Detector.fit`; with ``image_size="auto"`` it first runs the paper's size
        selection (a short training per size, validation loss only) and then trains at the
        chosen size. `image_size_selection_` records the losses."""
        self._check_config()
        if self.config.image_size != "auto":
            return super().fit(data, **kwargs)
        run_dir = kwargs.pop("run_dir", None)
        resume = kwargs.pop("resume", False)
        device, progress = kwargs.get("device"), kwargs.get("progress", True)
        categories = _as_categories(data)
        losses = {}
        for size in self.config.auto_sizes:
            trial = InTra(
                dataclasses.replace(
                    self.config, image_size=size, epochs=self.config.auto_epochs, patience=None
                )
            )
            # training only: the trials' maps and thresholds would never be used
            trial._train(trial._split(categories), None, False, device, progress)
            del trial._pixels
            losses[size] = _smoothed_best(trial.train_result_.history, self.config.auto_smooth)
        chosen = _choose_size(losses, self.config.auto_min_gain)
        self.config = dataclasses.replace(self.config, image_size=chosen)
        super().fit(categories, run_dir=run_dir, resume=resume, **kwargs)
        self.image_size_selection_ = {str(s): v for s, v in losses.items()}
        return self

    def fitted_state(self) -> dict:
        return {**super().fitted_state(), "image_size_selection": self.image_size_selection_}

    def _restore_state(self, state: dict) -> None:
        super()._restore_state(state)
        self.image_size_selection_ = state.get("image_size_selection")


def _smoothed_best(history: list[dict], half_width: int) -> float:
    """Best epoch-wise validation loss, each averaged over ±half_width epochs (InTra,
    arXiv:2104.13897 §4.1)."""
    losses = np.array([h.get("val_loss", h["train_loss"]) for h in history])
    return float(
        min(losses[max(0, e - half_width) : e + half_width + 1].mean() for e in range(len(losses)))
    )


def _choose_size(losses: dict[int, float], min_gain: float) -> int:
    """The smallest size whose loss the next size does not beat by at least `min_gain`."""
    sizes = sorted(losses)
    for smaller, larger in zip(sizes, sizes[1:], strict=False):
        if losses[smaller] - losses[larger] < min_gain:
            return smaller
    return sizes[-1]
