"""InTra on ELPV: the image score from the map as the paper takes it (its maximum) or pooled,
and the paper's map (eq. 7) or the one divided at each pixel by its mean over the training
images (the option `normalise_map`), compared on one fit per category. Every variant is
computed from the same maps, on `fit`'s validation signal (held-out good cells vs synthetic
defects) and on the test. The model is fitted with `normalise_map=True` (the `cpu` preset);
the paper's map is the library's normalised map times the fitted `map_var`, so both come from
one network and the normalised one is exactly what the preset predicts.

    .venv/bin/python benchmarks/intra_map.py --seed 0
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from common import add_run_options, apply_run_options, machine

import adformer
from adformer.benchmark import load_categories
from adformer.evaluation.metrics import image_metrics
from adformer.evaluation.validation import synthetic_outputs
from adformer.tiling import pooled_max

POOLS = (1, 8, 16, 32)


def scores(maps: np.ndarray, pool: int) -> np.ndarray:
    """Image scores as a detector takes them with `score_pool=pool`."""
    return np.array([pooled_max(m, pool) for m in maps])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-train", type=int, default=150)
    add_run_options(parser)
    args = parser.parse_args()
    options = {**apply_run_options(args), "normalise_map": True}
    print(f"machine: {machine()}; intra cpu {options}, seed {args.seed}", flush=True)
    found = {}
    for category in load_categories("elpv", None, None, args.seed, args.max_train):
        start = time.perf_counter()
        detector = adformer.create("intra", "cpu", seed=args.seed, **options)
        detector.fit([category], progress=False)
        fit = time.perf_counter() - start
        variance = detector.stats_.map_var.cpu().numpy()
        held_out = detector._split([category]).val  # what `fit` held out
        labels, _, _, val_maps = synthetic_outputs(detector, held_out, detector.config.seed)
        test_labels = np.array([s.label for s in category.test])
        test_maps = detector.predict([s.path for s in category.test]).maps
        row = {}
        for name, scale in (("paper", variance), ("normalised", 1.0)):
            for pool in POOLS:
                row[f"{name} pool {pool}"] = [
                    image_metrics(truth, scores(maps * scale, pool))["image_auroc"]
                    for truth, maps in ((labels, val_maps), (test_labels, test_maps))
                ]
        found[category.name] = row
        print(category.name, f"fit {fit:.0f} s", json.dumps(row), flush=True)
    print("\n| map | score | validation I-AUROC | test I-AUROC |\n|---|---|---|---|")
    for key in next(iter(found.values())):
        val, test = np.mean([row[key] for row in found.values()], axis=0)
        name, _, pool = key.partition(" pool ")
        score = "max" if pool == "1" else f"{pool}×{pool} mean"
        print(f"| {name} | {score} | {val:.3f} | {test:.3f} |")


if __name__ == "__main__":
    main()
