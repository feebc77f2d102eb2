"""Tiled prediction on large images: time and peak memory of one `predict` per image size,
PyTorch and the exported ONNX graph, each measurement in a fresh process.

    .venv/bin/python benchmarks/tiling.py --method uniad --sizes 1024 2048 4096 --threads 2

Random weights (time and memory do not depend on them), the `cpu` preset with tiles of
``--tile`` pixels (default: the model's input size, so tiles are not resized) and
``--overlap`` shared. The image is a smooth pattern saved as PNG; the child process loads the
bundle (or export), predicts a small image once, measures its resident memory, predicts the
large one and reports its peak (VmHWM) minus that baseline: what scoring the image added.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import add_run_options, apply_run_options, fitted_at_random, machine
from PIL import Image

from adformer.benchmark import peak_memory_mb


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2**20


def _child(source: str, image: str, backend: str, threads: int) -> None:
    from adformer.deploy.models import open_models

    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
    model = open_models(source, backend).model()
    model.predict([np.zeros((64, 64, 3), np.uint8)])  # warm-up: kernels, thread pools
    baseline = _rss_mb()
    start = time.perf_counter()
    result = model.predict([image])
    seconds = time.perf_counter() - start
    peak = peak_memory_mb()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "added_mb": peak - baseline,
                "peak_mb": peak,
                "score": float(result.scores[0]),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", default="uniad")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--sizes", nargs="+", type=int, default=[1024, 2048, 4096])
    parser.add_argument("--tile", type=int, help="default: the model's input size")
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--backends", nargs="+", default=["torch", "onnx"])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    add_run_options(parser)
    args = parser.parse_args()
    if args.child:
        _child(*args.child, args.threads)
        return
    options = apply_run_options(args)
    work = Path(tempfile.mkdtemp(prefix="adformer-tiling-"))
    detector = fitted_at_random(args.method, args.preset, options)
    tile = args.tile or detector.config.image_size
    detector.set_tiling(tile, args.overlap)
    detector.save(work / "run")
    sources = {"torch": work / "run"}
    if "onnx" in args.backends:
        from adformer.deploy.export import export_onnx

        sources["onnx"] = export_onnx(work / "run", work / "onnx")
    print(
        f"{machine()}; {args.method} {args.preset}, input {detector.config.image_size} px, "
        f"tile {tile}, overlap {args.overlap}, {args.threads} threads"
    )
    print("| backend | image | tiles | predict s | memory added MB | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    from adformer.tiling import tile_boxes

    for size in args.sizes:
        y, x = np.mgrid[0:size, 0:size].astype(np.float32)
        pattern = 127 + 120 * np.sin(x / 11.0) * np.cos(y / 7.0)
        path = work / f"image{size}.png"
        Image.fromarray(np.repeat(pattern[..., None], 3, 2).astype(np.uint8)).save(path)
        tiles = len(tile_boxes(size, size, tile, args.overlap))
        for backend in args.backends:
            command = [sys.executable, __file__, "--threads", str(args.threads)]
            command += ["--child", str(sources[backend]), str(path), backend]
            found = json.loads(
                subprocess.run(command, check=True, capture_output=True, text=True)
                .stdout.strip()
                .splitlines()[-1]
            )
            print(
                f"| {backend} | {size}×{size} | {tiles} | {found['seconds']:.1f} | "
                f"{found['added_mb']:.0f} | {found['peak_mb']:.0f} |"
            )


if __name__ == "__main__":
    main()
