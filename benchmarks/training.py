"""Training epoch time with the feature cache vs computing backbone features every step.

    .venv/bin/python benchmarks/training.py --preset cpu --images 128 --threads 2

Times one `Trainer` epoch over the same images both ways (the cache build is reported
separately). Backbone weights do not change the timing, so the networks are built without
downloading any (which also lets the `paper` preset be timed offline).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from common import add_run_options, apply_run_options, machine

import adformer
from adformer.backbones.cache import ImageTensors, cache_features
from adformer.data import load_root
from adformer.data.synthetic import make_synthetic_dataset
from adformer.data.types import FeatureBatch, ImageBatch
from adformer.engine import Trainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", default="uniad")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--images", type=int, default=128)
    add_run_options(parser)
    args = parser.parse_args()
    options = apply_run_options(args)
    detector = adformer.create(args.method, args.preset, **{**options, "epochs": 1})
    detector.build(pretrained=False, device="cpu")

    def loss(network, batch: FeatureBatch | ImageBatch):  # the reconstruction MSE
        features = batch.features if isinstance(batch, FeatureBatch) else None
        if features is None:
            features = detector.features(batch.images)
        return torch.nn.functional.mse_loss(network(features), features)

    size = detector.config.image_size
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic_dataset(tmp, ("grating",), n_train=args.images, size=256)
        samples = load_root(root)[0].train
        device = torch.device("cpu")
        start = time.perf_counter()
        cached = cache_features(detector.features, samples, size, 0, float("inf"), device)
        build = time.perf_counter() - start
        times = {}
        for name, data in (("cached", cached), ("uncached", ImageTensors(samples, size))):
            trainer = Trainer(detector.config, device, progress=False)
            start = time.perf_counter()
            trainer.fit(detector.network_, loss, data)
            times[name] = time.perf_counter() - start
    print(f"machine: {machine()}; threads {args.threads}")
    print(f"{args.method} {args.preset}: {args.images} images at {size} px, one epoch")
    print(f"  cache build (once)      {build:7.2f} s")
    print(f"  epoch with cache        {times['cached']:7.2f} s")
    print(f"  epoch without cache     {times['uncached']:7.2f} s")
    print(f"  -> {times['uncached'] / times['cached']:.1f}x faster per epoch with the cache")


if __name__ == "__main__":
    main()
