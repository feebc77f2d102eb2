"""Does InTra reconstruct, or has it collapsed to the mean colour? Fit one category and report
R² = 1 − MSE(reconstruction, image) / MSE(per-image mean colour, image) on the detector's own
held-out good images (≈ 0: collapsed), with the test AUROCs beside it.

    .venv/bin/python benchmarks/intra_reconstruction.py --texture checker --set lr=1e-4

Without --data a seeded synthetic texture set is generated (256 px, 60 train, 10 + 10 test).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
from common import add_run_options, apply_run_options, machine

import adformer
from adformer.data import load_root, validation_split
from adformer.data.dataset import loader
from adformer.data.synthetic import make_synthetic_dataset
from adformer.evaluation.evaluate import evaluate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", help="a data root (default: generated textures)")
    parser.add_argument("--texture", default="checker", help="the category")
    parser.add_argument("--preset", default="cpu")
    add_run_options(parser)
    args = parser.parse_args()
    options = apply_run_options(args)
    # all three textures, in the order of the recorded runs (each category's seed is its index)
    textures = ("dots", "checker", "grating")
    root = args.data or make_synthetic_dataset(
        tempfile.mkdtemp(), textures, n_train=60, n_test_good=10, n_test_defect=10, size=256
    )
    (category,) = load_root(root, [args.texture])
    start = time.perf_counter()
    detector = adformer.create("intra", args.preset, **options).fit([category], progress=False)
    fit = time.perf_counter() - start
    r2 = []
    for batch in loader(validation_split(category.train)[1], detector.config.image_size, 8):
        x = batch.images
        error = (detector.reconstruct(x).cpu() - x).square().mean((1, 2, 3))
        spread = (x - x.mean((2, 3), keepdim=True)).square().mean((1, 2, 3))
        r2.append((1 - error / spread).numpy())
    metrics = evaluate(detector, [category]).metrics
    print(f"machine: {machine()}; intra {args.preset} {options}")
    result = {
        "validation_r2": round(float(np.concatenate(r2).mean()), 4),
        "best_epoch": detector.train_result_.best_epoch,
        "fit_s": round(fit),
        "test_image_auroc": metrics["image_auroc"],
        "test_pixel_auroc": metrics["pixel_auroc"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
