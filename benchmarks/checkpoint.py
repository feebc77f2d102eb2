"""What one training checkpoint costs to write, per method and preset: the state `Trainer`
saves (network, best weights, optimiser moments, schedule), checksummed and synced as
`save_checkpoint` writes it, into a folder on the disk that runs go to.

    .venv/bin/python benchmarks/checkpoint.py --presets cpu gpu paper --dir runs

The last column is what writing one after every epoch would add to a fit of the preset's
epoch count (what `adformer.engine.CHECKPOINT_EVERY` avoids). Networks are built without
ImageNet weights (the size and the timing do not depend on them).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

from common import machine

import adformer
from adformer.checkpoint import CHECKPOINT, save_checkpoint
from adformer.engine import build_optimizer  # the method's own optimiser: its state is saved too


def state_of(method: str, preset: str) -> tuple[dict, int]:
    """The trainer's checkpoint state after one optimiser step, and the preset's epochs."""
    detector = adformer.create(method, preset)
    if getattr(detector.config, "image_size", None) == "auto":  # InTra's paper size search
        detector = adformer.create(method, preset, image_size=detector.config.auto_sizes[0])
    detector.build(pretrained=False, device="cpu")
    network = detector._trainable()
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimizer = build_optimizer(detector.config, trainable)
    sum(p.sum() for p in trainable).backward()
    optimizer.step()
    state = {
        "network": network.state_dict(),
        "best_state": copy.deepcopy(network.state_dict()),
        "optimizer": optimizer.state_dict(),
    }
    return state, detector.config.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["uniad", "adtr", "intra", "regad"])
    parser.add_argument("--presets", nargs="+", default=["cpu", "gpu", "paper"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("."), help="a folder on the runs' disk")
    args = parser.parse_args()
    print(f"{machine()}; writing into {args.dir.resolve()}\n")
    print("| method | preset | checkpoint MB | write s (median, min–max) | epochs | ", end="")
    print("every epoch, s |")
    print("|---|---|---|---|---|---|")
    for method in args.methods:
        for preset in args.presets:
            state, epochs = state_of(method, preset)
            times = []
            with tempfile.TemporaryDirectory(dir=args.dir) as folder:
                for _ in range(args.repeats):
                    began = time.perf_counter()
                    save_checkpoint(state, Path(folder))
                    times.append(time.perf_counter() - began)
                size = (Path(folder) / CHECKPOINT).stat().st_size / 1e6
            median = statistics.median(times)
            print(
                f"| {method} | {preset} | {size:.0f} | {median:.2f} ({min(times):.2f}–"
                f"{max(times):.2f}) | {epochs:,} | {median * epochs:,.0f} |"
            )


if __name__ == "__main__":
    main()
