"""How wide should the windows be that the image score averages the map over? The width changes
no training, so each model is fitted once per seed (on the split of `adformer benchmark`) and
scored at every width: `fit`'s validation signal (held-out good images vs synthetic defects,
what the choice is made on) beside the test. A few-shot method is fitted leave-one-out and
tested with k support images, as the benchmark does.

    .venv/bin/python benchmarks/score_pool.py --method uniad --data elpv --max-train 150 \\
        --seeds 0 1 2 --pools 16 32 48 64

Prints, and writes to ``--out`` (JSON), one row per width: validation and test image AUROC per
seed and their means, and per seed the difference from the preset's width on both.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
from common import add_grid_options, machine

import adformer
from adformer.benchmark import fit_plan, load_categories, method_options, tested_metrics


def score_at(detector, trained, tested, pool: int, shots: int, rounds: int) -> tuple[float, float]:
    """(validation, test) image AUROC at width `pool` of a detector fitted on `trained`,
    tested on `tested`: means over categories."""
    validation = detector.calibrate(trained, score_pool=pool).validation_["image_auroc"]
    probe = copy.copy(detector)  # a few-shot test adapts it; `detector` stays unadapted
    return validation, tested_metrics(probe, tested, shots, rounds)["image_auroc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_grid_options(parser)
    parser.add_argument("--pools", type=int, nargs="+", required=True)
    parser.add_argument("--rounds", type=int, default=5, help="support sets per category")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    options = method_options(args.method, args.shots, {})  # trained for the k it is tested with
    preset_pool = adformer.create(args.method, args.preset).config.score_pool
    pools = sorted({preset_pool, *args.pools})
    found = {}  # pool → seed → [(validation, test) per model]
    for seed in args.seeds:
        categories = load_categories(args.data, args.categories, None, seed, args.max_train)
        for trained, tested in fit_plan(args.method, categories):
            detector = adformer.create(args.method, args.preset, seed=seed, **options)
            start = time.perf_counter()
            detector.fit(trained, progress=False)
            names = ", ".join(c.name for c in tested)
            print(f"seed {seed}, {names}: fit {time.perf_counter() - start:.0f} s", flush=True)
            for pool in pools:  # validated on the images `fit` held out, as `fit` did
                found.setdefault(pool, {}).setdefault(seed, []).append(
                    score_at(detector, trained, tested, pool, args.shots, args.rounds)
                )
    rows = {
        pool: {seed: tuple(np.mean(pairs, axis=0)) for seed, pairs in by_seed.items()}
        for pool, by_seed in found.items()
    }
    lines = [
        f"{args.method}, `{args.preset}` preset (score_pool {preset_pool}), `--data {args.data}`; "
        f"{machine()}",
        "",
        "| score_pool | validation I-AUROC | test I-AUROC | validation − preset, per seed "
        "| test − preset, per seed |",
        "|---|---|---|---|---|",
    ]
    for pool, by_seed in rows.items():
        seeds = sorted(by_seed)
        val, test = (np.array([by_seed[s][i] for s in seeds]) for i in (0, 1))
        base_val, base_test = (np.array([rows[preset_pool][s][i] for s in seeds]) for i in (0, 1))

        def signed(values):
            return ", ".join(f"{v:+.3f}" for v in values)

        lines.append(
            f"| {pool} | {val.mean():.3f} ± {val.std():.3f} | {test.mean():.3f} ± {test.std():.3f} "
            f"| {signed(val - base_val)} | {signed(test - base_test)} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(json.dumps({str(p): r for p, r in rows.items()}, indent=2))


if __name__ == "__main__":
    main()
