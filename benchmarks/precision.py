"""Seconds per training epoch in fp32 beside bf16 autocast, each method with its own loss.

    .venv/bin/python benchmarks/precision.py --methods uniad adtr intra regad --images 64

Builds each method's preset (random weights: they do not change the speed), makes its training
set from embedded synthetic images exactly as `fit` does, and runs `Trainer` for
``--epochs`` epochs under each precision; the median epoch after the first (which pays oneDNN's
kernel creation) is reported. bf16 is fast only where the CPU computes it (AVX512-BF16 or AMX:
`adformer.engine.cpu_computes_bf16`); elsewhere it is emulated and slower than fp32.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile

import torch
from common import add_run_options, apply_run_options, machine

import adformer
from adformer.data import load_root
from adformer.data.synthetic import make_synthetic_dataset
from adformer.engine import Trainer, cpu_computes_bf16


def epoch_seconds(method: str, preset: str, options: dict, train, epochs: int) -> dict:
    """Median seconds per epoch under each precision; the detector and its training set are
    built once (the precision changes only the `Trainer`)."""
    detector = adformer.create(method, preset, **options)
    detector.build(pretrained=False, device="cpu")
    train_set, _ = detector._training_sets(train, [], torch.device("cpu"))
    config = dataclasses.replace(detector.config, epochs=epochs, max_steps=None, patience=None)
    seconds = {}
    for precision in ("fp32", "bf16"):
        trainer = Trainer(dataclasses.replace(config, precision=precision), "cpu", progress=False)
        result = trainer.fit(detector._trainable(), detector._loss, train_set)
        seconds[precision] = statistics.median(h["seconds"] for h in result.history[1:])
    return seconds | {"items": len(train_set), "px": detector.config.image_size}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", nargs="+", default=["uniad", "adtr", "intra", "regad"])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--images", type=int, default=64, help="training images per category")
    parser.add_argument("--epochs", type=int, default=4)
    add_run_options(parser)
    args = parser.parse_args()
    options = apply_run_options(args)
    print(f"machine: {machine()}; threads {args.threads}; bf16 instructions: {cpu_computes_bf16()}")
    print("| method | px | items per epoch | fp32 s/epoch | bf16 s/epoch | speed-up |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic_dataset(tmp, ("grating", "dots"), n_train=args.images, size=256)
        train = [s for category in load_root(root) for s in category.train]
        for method in args.methods:
            t = epoch_seconds(method, args.preset, options, train, args.epochs)
            cells = [method, t["px"], t["items"], f"{t['fp32']:.2f}", f"{t['bf16']:.2f}"]
            print("| " + " | ".join(map(str, cells)) + f" | {t['fp32'] / t['bf16']:.2f}× |")


if __name__ == "__main__":
    main()
