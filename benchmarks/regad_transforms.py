"""What RegAD's spatial transformers learned, and what they do to the test: for each
leave-one-out model of the grid (fitted, or kept by `rescore.py` in ``--out``), each stage's
transform of the tested category's good training images (rotation, the scale along each axis,
their spread over the images) and the test image AUROC with the transformers as trained and
reset to the identity (their last layer: zero weights, the identity's parameters as bias; the
backbone, the views and the Gaussian as the preset has them).

    .venv/bin/python benchmarks/regad_transforms.py --data elpv --max-train 150 --seeds 0 \\
        --labelled-validation 40 --out /tmp/abl33/rescore
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from common import machine
from rescore import fitted

from adformer.benchmark import fit_plan, load_categories, method_options, tested_metrics
from adformer.data.dataset import preload
from adformer.nn.stn import MODES


def transforms(detector, samples, limit: int = 64) -> list[dict]:
    """Each stage's transform of up to `limit` images: mean and spread over them."""
    images = preload(samples[:limit], detector.config.image_size, limit, "cpu").float() / 255
    detector.model_.eval()
    with torch.no_grad():
        _, thetas = detector.model_(images.to(detector.device_))
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
        last = transformer.fc[-1]
        torch.nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor(MODES[transformer.mode], dtype=last.bias.dtype))
    return reset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max-train", type=int)
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--labelled-validation", type=int, default=0, metavar="N")
    parser.add_argument(
        "--out", type=Path, help="`rescore.py`'s folder: its fitted models are used, or kept"
    )
    args = parser.parse_args()
    options = method_options("regad", args.shots, {})
    print(f"regad, `{args.preset}` preset, --data {args.data}; {machine()}")
    for seed in args.seeds:
        categories = load_categories(
            args.data, None, None, seed, args.max_train, args.labelled_validation
        )
        for trained, tested in fit_plan("regad", categories):
            names = "-".join(c.name for c in tested)
            folder = args.out / "models" / f"seed{seed}-{names}" if args.out else None
            detector, took = fitted(
                "regad", args.preset, {**options, "seed": seed}, trained, folder
            )
            print(f"\nseed {seed}, tested on {names} ({took}); trained on the others")
            for stage, found in zip(
                detector.config.stages, transforms(detector, tested[0].train), strict=True
            ):
                text = ", ".join(f"{k} {m:.3f} ± {s:.3f}" for k, (m, s) in found.items())
                print(f"  stage {stage} on its good training images: {text}")
            for name, variant in (("as trained", detector), ("identity", identity(detector))):
                auroc = tested_metrics(variant, tested, args.shots, args.rounds)["image_auroc"]
                print(f"  test image AUROC, transformers {name}: {auroc:.4f}", flush=True)


if __name__ == "__main__":
    main()
