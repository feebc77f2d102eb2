"""Inference throughput of a method at 224 px, batch 16, on N CPU threads.

    .venv/bin/python benchmarks/throughput.py --method uniad --preset cpu --threads 2

Reports images/s, FLOPs per image (torch's FLOP counter: matmuls and convolutions) and the
achieved FLOP/s as a fraction of this machine's measured fp32 matmul throughput.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import add_run_options, apply_run_options, machine, matmul_gflops
from torch.utils.flop_counter import FlopCounterMode

import adformer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", default="uniad")
    parser.add_argument("--preset", default="cpu")
    add_run_options(parser)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    options = apply_run_options(args)

    # random weights: they do not change the speed
    detector = adformer.create(args.method, args.preset, **options).build(False, "cpu")
    for module in detector.modules().values():
        module.eval().requires_grad_(False)  # inference: FLOP counting needs no autograd
    size = detector.config.image_size
    images = torch.rand(args.batch, 3, size, size)

    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            detector.infer(images)
        flops = counter.get_total_flops() / args.batch
        backbone = FlopCounterMode(display=False)
        with backbone:
            detector.features(images)
        backbone_flops = backbone.get_total_flops() / args.batch
        detector.infer(images)  # warm-up
        start = time.perf_counter()
        for _ in range(args.repeats):
            detector.infer(images)
        seconds = (time.perf_counter() - start) / (args.repeats * args.batch)
        start = time.perf_counter()
        for _ in range(args.repeats):
            detector.features(images)
        backbone_seconds = (time.perf_counter() - start) / (args.repeats * args.batch)

    peak = matmul_gflops()
    print(f"machine: {machine()}; threads {args.threads}")
    print(f"{args.method} {args.preset} {options}: {size} px, batch {args.batch}")
    print(f"  images/s            {1 / seconds:8.1f}")
    print(f"  GFLOPs/image        {flops / 1e9:8.3f}  (backbone {backbone_flops / 1e9:.3f})")
    print(f"  backbone images/s   {1 / backbone_seconds:8.1f}")
    print(f"  achieved GFLOP/s    {flops / seconds / 1e9:8.1f}")
    print(f"  matmul GFLOP/s      {peak:8.1f}  -> {flops / seconds / 1e9 / peak:.0%} of it")


if __name__ == "__main__":
    main()
