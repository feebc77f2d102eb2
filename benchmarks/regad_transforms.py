"""What RegAD's spatial transformers learned, and what they do to the test: for each
leave-one-out model of the grid (fitted, or kept by `rescore.py` in ``--out``), each stage's
transform of the tested category's good training images (rotation, the scale along each axis,
their spread over the images) and the test image AUROC with the transformers as trained and
reset to the identity (their last layer: zero weights, the identity's parameters as bias; the
backbone, the views and the Gaussian as the preset has them).

    .venv/bin/python benchmarks/regad_transforms.py --method regad --data elpv --max-train 150 \\
        --seeds 0 --labelled-validation 40 --out /tmp/abl33/rescore
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from common import add_grid_options, machine
from rescore import grid_models

from adformer.benchmark import tested_metrics
from adformer.data.dataset import preload


def transforms(detector, samples, limit: int = 64) -> list[dict]:
    """Each stage's transform of up to `limit` images: mean and spread over them."""
    size = detector.config.image_size
    images = preload(samples[:limit], size, limit, detector.device_).float() / 255
    detector.model_.eval()
    with torch.no_grad():
        _, thetas = detector.model_(images)
    found = []
    for theta in thetas:
        linear = theta[:, :, :2].cpu()
        scale = linear.norm(dim=1)  # each axis's length after the map: (B, 2)
        angle = torch.rad2deg(torch.atan2(linear[:, 1, 0], linear[:, 0, 0]))
        found.append(
            {
                "rotation (degrees)": (angle.mean().item(), angle.std().item()),
                "scale x": (scale[:, 0].mean().item(), scale[:, 0].std().item()),
                "scale y": (scale[:, 1].mean().item(), scale[:, 1].std().item()),
            }
        )
    return found


def identity(detector):
    """A copy of `detector` whose spatial transformers leave every feature where it is."""
    reset = copy.deepcopy(detector)
    for transformer in reset.model_.transformers:
        transformer.reset()
    return reset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_grid_options(parser)
    parser.add_argument(
        "--out", type=Path, help="`rescore.py`'s folder: its fitted models are used, or kept"
    )
    args = parser.parse_args()
    if args.method != "regad" or args.peers:
        parser.error("this looks at RegAD's transformers: --method regad, no --peers")
    print(f"regad, `{args.preset}` preset, --data {args.data}; {machine()}")
    for seed, _, tested, _, detector, took in grid_models(args):
        names = "-".join(c.name for c in tested)
        print(f"\nseed {seed}, tested on {names} ({took}); trained on the others")
        learned = transforms(detector, tested[0].train)
        for stage, found in zip(detector.config.stages, learned, strict=True):
            text = ", ".join(f"{k} {m:.3f} ± {s:.3f}" for k, (m, s) in found.items())
            print(f"  stage {stage} on its good training images: {text}")
        for name, variant in (("as trained", detector), ("identity", identity(detector))):
            auroc = tested_metrics(variant, tested, args.shots, args.rounds)["image_auroc"]
            print(f"  test image AUROC, transformers {name}: {auroc:.4f}", flush=True)


if __name__ == "__main__":
    main()
