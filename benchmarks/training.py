"""Training epoch time with the feature cache vs computing backbone features every step.

.venv/bin/python benchmarks/training.py --images 128 --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from common import machine

import adformer
from adformer.data import load_root
from adformer.data.synthetic import make_synthetic_dataset


def epoch_seconds(root, budget_gb: float, epochs: int) -> tuple[float, float]:
    """(seconds for the whole fit, seconds per epoch from the trainer's history span)."""
    detector = adformer.create("uniad", preset="cpu", epochs=epochs, cache_budget_gb=budget_gb)
    start = time.perf_counter()
    detector.fit(load_root(root), progress=False, device="cpu")
    total = time.perf_counter() - start
    return total, total / epochs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic_dataset(tmp, ("grating",), n_train=args.images, size=224)
        for epochs in (args.epochs, 2 * args.epochs):
            cached, _ = epoch_seconds(root, 4.0, epochs)
            uncached, _ = epoch_seconds(root, 0.0, epochs)
            print(f"{epochs} epochs: cached {cached:.1f} s, uncached {uncached:.1f} s")
            if epochs == args.epochs:
                first = (cached, uncached)
        # the difference between 2E and E epochs is E epochs of pure training (set-up cancels)
        per_cached = (cached - first[0]) / args.epochs
        per_uncached = (uncached - first[1]) / args.epochs
    print(f"machine: {machine()}; threads {args.threads}; {args.images} images at 224 px")
    print(f"epoch with cache    {per_cached:6.2f} s")
    print(
        f"epoch without cache {per_uncached:6.2f} s"
        f"  -> cache is {per_uncached / per_cached:.1f}x faster"
    )


if __name__ == "__main__":
    main()
