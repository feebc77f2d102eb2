"""Spatial transformer for RegAD's feature registration (RegAD, arXiv:2207.07361 §3.2): a
localization net predicts the parameters of one of nine transform families, initialised to the
identity, and the features are warped with reflection padding. Inverses are exact (closed
form), batched, on the features' device."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from adformer.errors import AdformerError

# transform family → its identity parameters (the localization net's initial output)
MODES: dict[str, tuple[float, ...]] = {
    "affine": (1, 0, 0, 0, 1, 0),
    "translation": (0, 0),
    "rotation": (0,),
    "scale": (1, 1),
    "shear": (0, 0),
    "rotation_scale": (0, 1, 1),
    "translation_scale": (0, 0, 1, 1),
    "rotation_translation": (0, 0, 0),
    "rotation_translation_scale": (0, 0, 0, 1, 1),
}


def transform_matrix(params: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, n) parameters → (B, 2, 3) affine matrices (the official RegAD parameterisations:
    angle first, then translation, then per-axis scale)."""
    if mode == "affine":
        return params.view(-1, 2, 3)
    batch = params.shape[0]
    one, zero = params.new_ones(batch), params.new_zeros(batch)
    a, b, c, d, tx, ty = one, zero, zero, one, zero, zero
    if "rotation" in mode:
        angle = params[:, 0]
        a, b, c, d = angle.cos(), -angle.sin(), angle.sin(), angle.cos()
    if mode in ("translation", "translation_scale"):
        tx, ty = params[:, 0], params[:, 1]
    if mode in ("rotation_translation", "rotation_translation_scale"):
        tx, ty = params[:, 1], params[:, 2]
    if mode.endswith("scale"):
        sx, sy = params[:, -2], params[:, -1]
        a, d = a * sx, d * sy
    if mode == "shear":
        b, c = params[:, 0], params[:, 1]
    return torch.stack([torch.stack([a, b, tx], 1), torch.stack([c, d, ty], 1)], 1)


def invert(theta: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) → the inverse affine maps (B, 2, 3), in closed form: [A t]⁻¹ = [A⁻¹ −A⁻¹t]
    with the 2×2 adjugate (exact, and plain arithmetic that ONNX export can carry)."""
    a, b, tx = theta[:, 0].unbind(1)
    c, d, ty = theta[:, 1].unbind(1)
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    rows = [
        torch.stack([ia, ib, -(ia * tx + ib * ty)], 1),
        torch.stack([ic, id_, -(ic * tx + id_ * ty)], 1),
    ]
    return torch.stack(rows, 1)


def compose(first: torch.Tensor, then: torch.Tensor) -> torch.Tensor:
    """The single warp equal to warping with `first`, then with `then` (grid_sample samples
    the input at θ·p, so the composite samples at first·then·p)."""
    bottom = first.new_tensor([0.0, 0.0, 1.0]).expand(first.shape[0], 1, 3)
    full = torch.cat([first, bottom], 1) @ torch.cat([then, bottom], 1)
    return full[:, :2]


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample (B, C, H, W) at θ·p with reflection padding."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)


class SpatialTransformer(nn.Module):
    """Localization net (conv3×3-BN-ReLU-maxpool ×2 → FC 1024 → FC to the parameters) and warp.

    Returns the warped features and their (B, 2, 3) transform. The last layer starts at zero
    weights and the identity as bias, so an untrained module leaves its input unchanged.
    """

    def __init__(self, channels: int, feature_size: int, mode: str = "rotation_scale"):
        super().__init__()
        if mode not in MODES:
            raise AdformerError(f"unknown STN mode '{mode}': choose from {', '.join(MODES)}")
        self.mode = mode
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.Conv2d(64, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        pooled = math.ceil(math.ceil(feature_size / 2) / 2)
        self.fc = nn.Sequential(
            nn.Linear(16 * pooled * pooled, 1024), nn.ReLU(), nn.Linear(1024, len(MODES[mode]))
        )
        self.reset()

    @torch.no_grad()
    def reset(self) -> None:
        """Back to the identity: the last layer's weights zero, its bias the identity's
        parameters (whatever the rest of the localization net has learned)."""
        last = self.fc[-1]
        nn.init.zeros_(last.weight)
        last.bias.copy_(torch.tensor(MODES[self.mode], dtype=last.bias.dtype))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        theta = transform_matrix(self.fc(self.conv(x).flatten(1)), self.mode)
        return warp(x, theta), theta
