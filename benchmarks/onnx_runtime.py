"""PyTorch vs the exported ONNX graph on onnxruntime: inference images/s and agreement, per
method, same machine, same threads, one run.

    .venv/bin/python benchmarks/onnx_runtime.py --methods uniad adtr intra regad --threads 2

Random weights (the speed does not depend on them; RegAD is adapted to 4 random images so
that its Gaussian exists). Each model is saved as a bundle, exported with `export_onnx` (which
itself checks the graph against PyTorch) and timed on the same batch of random images.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import add_run_options, apply_run_options, fitted_at_random, machine

from adformer.deploy.export import deviation, export_onnx
from adformer.runtime import load


def _images_per_second(run, batch: int, repeats: int) -> float:
    run()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return repeats * batch / (time.perf_counter() - start)


def _measure(method: str, args, options: dict) -> tuple:
    detector = fitted_at_random(method, args.preset, options)
    folder = Path(tempfile.mkdtemp())
    detector.save(folder / "bundle")
    start = time.perf_counter()
    export_onnx(folder / "bundle", folder / "onnx")
    export_s = time.perf_counter() - start
    model = load(folder / "onnx", threads=args.threads).model()
    size = detector.config.image_size
    images = torch.rand(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    array = images.numpy()
    torch_rate = _images_per_second(lambda: detector.infer(images), args.batch, args.repeats)
    onnx_rate = _images_per_second(lambda: model.infer(array), args.batch, args.repeats)
    reference = tuple(t.numpy() for t in detector.infer(images))
    return method, size, torch_rate, onnx_rate, export_s, deviation(reference, model.infer(array))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", nargs="+", default=["uniad", "adtr", "intra", "regad"])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    add_run_options(parser)
    args = parser.parse_args()
    options = apply_run_options(args)
    rows = [_measure(m, args, options) for m in args.methods]
    print(f"machine: {machine()}; threads {args.threads}; preset {args.preset} {options}")
    print(f"batch {args.batch}, {args.repeats} repeats after a warm-up; random weights")
    print("| method | px | PyTorch img/s | onnxruntime img/s | export s | rel. Δ score / map |")
    print("|---|---|---|---|---|---|")
    for method, size, torch_rate, onnx_rate, export_s, d in rows:
        print(
            f"| {method} | {size} | {torch_rate:.1f} | {onnx_rate:.1f} | {export_s:.0f} "
            f"| {d['scores']:.1e} / {d['maps']:.1e} |"
        )


if __name__ == "__main__":
    main()
