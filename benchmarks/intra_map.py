"""InTra: the image score from the map as the paper takes it (its maximum) or pooled, and the
paper's map (eq. 7), the one divided at each pixel by its variance over the training images
(the option `normalise_map`), or divided by that variance plus a floor (``--floors``: λ times
its mean over the image), compared on one fit per category. Every variant is computed from
the same maps, on `fit`'s validation signal (held-out good images vs synthetic defects) and on
the test; pixel AUROC too where the data set has masks. The model is fitted with
`normalise_map=True` (the `cpu` preset); the paper's map is the library's normalised map times
the fitted `map_var`, so every variant comes from one network and the normalised one is
exactly what the preset predicts.

    .venv/bin/python benchmarks/intra_map.py --seed 0
    .venv/bin/python benchmarks/intra_map.py --data ../shared/data --categories hazelnut_toy \
        --pools 1 --floors 0.25 1 4
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from common import add_run_options, apply_run_options, machine

import adformer
from adformer.benchmark import load_categories
from adformer.evaluation.metrics import auroc
from adformer.evaluation.validation import synthetic_outputs
from adformer.tiling import pooled_max


def scores(maps: np.ndarray, pool: int) -> np.ndarray:
    """Image scores as a detector takes them with `score_pool=pool`."""
    return np.array([pooled_max(m, pool) for m in maps])


def mean_or_dash(values: list) -> str:
    return "–" if None in values else f"{np.mean(values):.3f}"


def outputs_on_test(detector, category) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Labels, maps and (where the category has them) masks of its test images."""
    labels, maps, masks = [], [], []
    for scored in detector.score_samples(category.test, skip_unreadable=False):
        labels.append(scored.batch.labels.numpy())
        maps.append(scored.maps.astype(np.float32))
        masks.append(scored.batch.masks.numpy())
    return (
        np.concatenate(labels),
        np.concatenate(maps),
        np.concatenate(masks) if category.has_masks else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="elpv", help="elpv or a data root")
    parser.add_argument("--categories", nargs="*")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-train", type=int, default=150)
    parser.add_argument("--pools", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--floors", type=float, nargs="*", default=[], metavar="λ")
    add_run_options(parser)
    args = parser.parse_args()
    options = {**apply_run_options(args), "normalise_map": True}
    print(f"machine: {machine()}; intra cpu {options}, seed {args.seed}", flush=True)
    found = {}
    for category in load_categories(args.data, args.categories, None, args.seed, args.max_train):
        start = time.perf_counter()
        detector = adformer.create("intra", "cpu", seed=args.seed, **options)
        detector.fit([category], progress=False)
        fit = time.perf_counter() - start
        variance = detector.stats_.map_var.cpu().numpy()
        held_out = detector._split([category]).val  # what `fit` held out
        labels, _, val_masks, val_maps = synthetic_outputs(detector, held_out, args.seed)
        test_labels, test_maps, test_masks = outputs_on_test(detector, category)
        # each variant's map as a multiple of the normalised one (what the detector predicts)
        scales = {"paper": variance, "normalised": 1.0}
        for floor in args.floors:
            scales[f"floor {floor:g}"] = variance / (variance + floor * variance.mean())
        row = {}
        for name, scale in scales.items():
            sets = ((labels, val_maps, val_masks), (test_labels, test_maps, test_masks))
            for pool in args.pools:
                row[f"{name} pool {pool}"] = [
                    auroc(truth, scores(maps * scale, pool)) for truth, maps, _ in sets
                ]
            row[f"{name} pixel"] = [
                None if masks is None else auroc(masks.ravel(), (maps * scale).ravel())
                for _, maps, masks in sets
            ]
        found[category.name] = row
        print(category.name, f"fit {fit:.0f} s", json.dumps(row), flush=True)
    print("\n| map | score | validation I-AUROC | test I-AUROC |\n|---|---|---|---|")
    for key in next(iter(found.values())):
        if key.endswith(" pixel"):
            continue
        val, test = np.mean([row[key] for row in found.values()], axis=0)
        name, _, pool = key.partition(" pool ")
        score = "max" if pool == "1" else f"{pool}×{pool} mean"
        print(f"| {name} | {score} | {val:.3f} | {test:.3f} |")
    pixel = [k for k, v in next(iter(found.values())).items() if k.endswith(" pixel") and v[0]]
    if pixel:
        print("\n| map | validation P-AUROC | test P-AUROC |\n|---|---|---|")
        for key in pixel:  # the test's where the data set has masks (ELPV has none)
            means = [mean_or_dash([row[key][i] for row in found.values()]) for i in (0, 1)]
            print(f"| {key.removesuffix(' pixel')} | {' | '.join(means)} |")


if __name__ == "__main__":
    main()
