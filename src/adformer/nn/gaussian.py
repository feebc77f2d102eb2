"""A Gaussian per spatial position of a feature map, scored by Mahalanobis distance: the
normal model of RegAD (arXiv:2207.07361 §3.3), as of PaDiM (arXiv:2011.08785) before it. Its
covariance is the sample covariance plus a small ridge (the papers'), or optionally shrunk
towards a multiple of the identity by the Ledoit-Wolf estimate of the best intensity
(J. Multivariate Anal. 88, 2004), for when there are fewer samples than channels.

Fitted and scored with batched Cholesky factorisations and one batched triangular solve, no
loop over positions and no explicit inverse.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from sklearn.covariance import ledoit_wolf_shrinkage
from torch import nn

# how `Gaussian.fit` estimates each position's covariance before the ridge is added
ESTIMATORS = ("sample", "ledoit_wolf")


@contextmanager
def _lapack_threads(device: torch.device):
    """One intra-op thread for batched small LAPACK calls on the CPU: MKL threading per
    176×176 Cholesky/solve gains nothing and, on a busy machine, made them 50× slower
    (6.3 s vs 0.12 s for 1,024 Cholesky factorisations, measured on 2 cores)."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Gaussian(nn.Module):
    """Per-position mean (P, C) and Cholesky factor of the covariance (P, C, C), over the
    channels `channel_index` of the embedding (a seeded subset, or all).

    >>> gaussian = Gaussian(positions=64, channels=8)
    >>> gaussian.fit(torch.randn(20, 8, 64), eps=0.01)
    >>> gaussian.distance(torch.randn(3, 8, 64)).shape
    torch.Size([3, 64])
    """

    SHAPE = ("positions", "channels")  # the constructor's arguments

    def __init__(self, positions: int, channels: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(positions, channels))
        self.register_buffer("cholesky", torch.eye(channels).repeat(positions, 1, 1))
        self.register_buffer("channel_index", torch.arange(channels))

    @property
    def shape(self) -> dict[str, int]:
        """`SHAPE` → size, what a saved model is rebuilt with before its buffers load."""
        return dict(zip(self.SHAPE, self.mean.shape, strict=True))

    def fit(
        self, embeddings: torch.Tensor, eps: float, estimator: str = "sample", chunk: int = 256
    ) -> None:
        """(N, C, P) samples → the Gaussian (covariance + eps·I), `chunk` positions at a time
        so no (P, C, C) covariance exists beside the factor (2.5 GB each at RegAD's shape).
        `estimator` "ledoit_wolf": each position's sample covariance S becomes
        (1 − δ)·S + δ·(tr S / C)·I, δ estimated from its own samples (scikit-learn's
        `ledoit_wolf_shrinkage`), before the ridge."""
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
        x = embeddings.permute(2, 0, 1).contiguous()  # (P, N, C)
        mean = x.mean(1)
        centred = x - mean[:, None]
        self.mean.copy_(mean)
        eye = torch.eye(x.shape[-1], device=x.device)
        for start in range(0, x.shape[0], chunk):
            part = centred[start : start + chunk]
            # a contiguous transpose: the batched product of a transposed view was slower
            cov = part.transpose(1, 2).contiguous() @ part / max(x.shape[1] - 1, 1)
            if estimator == "ledoit_wolf":
                cov = _shrunk(cov, part)
            with _lapack_threads(cov.device):
                self.cholesky[start : start + chunk] = torch.linalg.cholesky(cov + eps * eye)

    def distance(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, C, P) → Mahalanobis distances (B, P): one batched triangular solve over all
        positions (L y = x − μ, d = ‖y‖), no loop over positions."""
        delta = (embeddings.permute(2, 1, 0) - self.mean[:, :, None]).contiguous()  # (P, C, B)
        with _lapack_threads(delta.device):
            y = torch.linalg.solve_triangular(self.cholesky, delta, upper=False)
        return y.square().sum(1).sqrt().T


def _shrunk(cov: torch.Tensor, centred: torch.Tensor) -> torch.Tensor:
    """(P, C, C) sample covariances of the (P, N, C) centred samples → each shrunk towards
    its mean variance times the identity by its Ledoit-Wolf intensity."""
    samples = centred.detach().double().cpu().numpy()
    intensity = [ledoit_wolf_shrinkage(s, assume_centered=True) for s in samples]
    delta = torch.tensor(intensity, dtype=cov.dtype, device=cov.device)[:, None, None]
    scale = cov.diagonal(dim1=1, dim2=2).mean(1)[:, None, None]
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    return (1 - delta) * cov + delta * scale * eye


class GaussianProduct(nn.Module):
    """A fitted `Gaussian` as constants for export: d = ‖L⁻¹(x − μ)‖ by one batched matrix
    product with the inverse Cholesky factor (computed once, in float64), since ONNX has no
    triangular solve. Same distances as `Gaussian.distance` to float32 rounding.

    >>> gaussian = Gaussian(positions=64, channels=8)
    >>> gaussian.fit(torch.randn(20, 8, 64), eps=0.01)
    >>> x = torch.randn(3, 8, 64)
    >>> torch.allclose(GaussianProduct(gaussian)(x), gaussian.distance(x), rtol=1e-4)
    True
    """

    def __init__(self, gaussian: Gaussian):
        super().__init__()
        factor = gaussian.cholesky.double()
        eye = torch.eye(factor.shape[-1], dtype=factor.dtype, device=factor.device)
        with _lapack_threads(factor.device):
            inverse = torch.linalg.solve_triangular(factor, eye.expand_as(factor), upper=False)
        self.register_buffer("mean", gaussian.mean.clone())
        self.register_buffer("inverse", inverse.float())

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, C, P) → Mahalanobis distances (B, P)."""
        delta = embeddings.permute(2, 1, 0) - self.mean[:, :, None]  # (P, C, B)
        return (self.inverse @ delta).square().sum(1).sqrt().T
