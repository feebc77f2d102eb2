"""InTra on ELPV: the image score from the map as the paper takes it (its maximum) or pooled,
and the map divided at each pixel by its mean over the training images (what the option
`normalise_map` does), compared on one fit per category. Every variant is computed from the
same maps, on `fit`'s validation signal (held-out good cells vs synthetic defects) and on the
test. The model is fitted with the paper's map (``normalise_map=False``) and the normalised
one computed from it, so both come from one network.

    .venv/bin/python benchmarks/intra_map.py --seed 0
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from common import add_run_options, apply_run_options, machine

import adformer
from adformer.benchmark import load_categories
from adformer.data.folders import validation_split
from adformer.evaluation.metrics import image_metrics
from adformer.evaluation.validation import synthetic_outputs

POOLS = (1, 8, 16, 32)


def scores(maps: np.ndarray, scale: np.ndarray | None, pool: int) -> np.ndarray:
    """Image scores: the largest mean over pool×pool windows of the map (divided by `scale`)."""
    m = torch.from_numpy(maps).float()
    if scale is not None:
        m = m / torch.from_numpy(scale).float().clamp_min(1e-12)
    if pool > 1:
        m = F.avg_pool2d(m[:, None], pool, stride=1)
    return m.flatten(1).amax(1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-train", type=int, default=150)
    add_run_options(parser)
    args = parser.parse_args()
    options = {**apply_run_options(args), "normalise_map": False}
    print(f"machine: {machine()}; intra cpu {options}, seed {args.seed}", flush=True)
    found = {}
    for category in load_categories("elpv", None, None, args.seed, args.max_train):
        start = time.perf_counter()
        detector = adformer.create("intra", "cpu", seed=args.seed, **options)
        detector.fit([category], progress=False)
        fit = time.perf_counter() - start
        train, held_out = validation_split(category.train)
        variance = detector.predict([s.path for s in train]).maps.mean(0)
        labels, _, _, val_maps = synthetic_outputs(detector, held_out, detector.config.seed)
        test_labels = np.array([s.label for s in category.test])
        test_maps = detector.predict([s.path for s in category.test]).maps
        row = {}
        for name, scale in (("paper", None), ("normalised", variance)):
            for pool in POOLS:
                row[f"{name} pool {pool}"] = [
                    image_metrics(truth, scores(maps, scale, pool))["image_auroc"]
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
