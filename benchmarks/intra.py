"""InTra speed: batched full-image inpainting vs window by window, FLOPs, training windows/s.

    .venv/bin/python benchmarks/intra.py --preset cpu
    .venv/bin/python benchmarks/intra.py --preset paper --set image_size=256 --batch 2

Batched = `InTra.infer` (every patch embedded once per image, all windows of the batch in one
forward pass, plus the GMS anomaly map). Window by window = what a straightforward port does:
one forward per patch, its window's patches embedded from scratch each time (the network
only; the map computation is excluded, so the ratio understates the batched path's lead).
Random weights: they do not change the speed.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import add_run_options, apply_run_options, machine, matmul_gflops
from torch.utils.flop_counter import FlopCounterMode

import adformer
from adformer.methods.intra import inference_windows, patchify


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--batch", type=int, default=8, help="images per inference batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=5)
    add_run_options(parser)
    args = parser.parse_args()
    options = apply_run_options(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    detector = adformer.create("intra", args.preset, **options).build(False, device)
    network = detector.network_.eval()
    c = detector.config
    images = torch.rand(args.batch, 3, c.image_size, c.image_size, device=device)
    ids, inside = (t.to(device) for t in inference_windows(detector.grid, c.window))

    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            detector.infer(images[:1])
        flops = counter.get_total_flops()
        batched = timed(lambda: detector.infer(images), args.repeats) / args.batch

        def window_by_window():
            patches = patchify(images[:1], c.patch_size)
            for p in range(len(ids)):
                network(patches[:, ids[p]], ids[p][None], inside[p][None])

        single = timed(window_by_window, 1)

    # training: the preset's batch of random windows, forward + the paper's loss + backward +
    # Adam step (cutting the windows out of the images, a gather, is not timed)
    network.train()
    optimizer = torch.optim.Adam(network.parameters(), c.lr)
    side = c.window * c.patch_size
    positions = torch.arange(c.window**2, device=device)

    def step():
        windows = patchify(torch.rand(c.batch_size, 3, side, side, device=device), c.patch_size)
        covered = torch.randint(0, c.window**2, (c.batch_size,), device=device)
        target = windows[torch.arange(c.batch_size, device=device), covered]
        predicted = network(windows, positions.expand(c.batch_size, -1), covered)
        loss = detector.patch_loss(predicted, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    train_step = timed(step, args.train_steps)

    peak = matmul_gflops() if device.type == "cpu" else None
    achieved = flops / batched / 1e9
    print(f"machine: {machine()}; threads {torch.get_num_threads()}; device {device}")
    print(
        f"intra {args.preset} {options}: {c.image_size} px, K={c.patch_size}, L={c.window}, "
        f"D={c.dim}, depth {c.depth}; {len(ids)} windows/image"
    )
    print(f"FLOPs/image      {flops / 1e9:.3f} G")
    print(f"batched          {1 / batched:.2f} images/s (batch {args.batch})")
    print(
        f"window by window {1 / single:.3f} images/s -> batched is {single / batched:.1f}x faster"
    )
    if peak:
        print(
            f"achieved         {achieved:.1f} GFLOP/s = {achieved / peak:.0%} of {peak:.0f} matmul"
        )
    print(f"training         {c.batch_size / train_step:.0f} windows/s (batch {c.batch_size})")


if __name__ == "__main__":
    main()
