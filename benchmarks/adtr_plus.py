"""ADTR vs ADTR+ on ELPV (per category): unsupervised, with 10 and 30 real labelled defects,
and with synthetic anomalies only. Image AUROC on the same test set for every variant.

    .venv/bin/python benchmarks/adtr_plus.py --seeds 0 1 2 --max-train 150

The 30 pooled defects are removed from the test set for *every* variant (so all variants are
scored on identical images); ADTR+ trains on the first 10 or all 30 of them. Nothing is
chosen on the test set.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from common import add_run_options, apply_run_options, machine

import adformer
from adformer.data.elpv import load_elpv
from adformer.evaluation.evaluate import evaluate

POOL = 30


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--categories", nargs="+", default=["mono", "poly"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-train", type=int, default=150)
    parser.add_argument("--synthetic", type=int, default=30)
    add_run_options(parser)
    parser.add_argument("--json")
    args = parser.parse_args()
    options = apply_run_options(args)
    variants = {
        "ADTR": (0, 0),
        "ADTR+ 10 real": (10, 0),
        "ADTR+ 30 real": (30, 0),
        f"ADTR+ {args.synthetic} synthetic": (0, args.synthetic),
    }
    results: dict[str, dict[str, list[float]]] = {v: {} for v in variants}
    for seed in args.seeds:
        for name in args.categories:
            for variant, (real, synthetic) in variants.items():
                (category,) = load_elpv(
                    [name], seed=seed, max_train=args.max_train, anomaly_pool=POOL
                )
                category.anomalies = category.anomalies[:real]
                detector = adformer.create(
                    "adtr", "cpu", seed=seed, synthetic_anomalies=synthetic, **options
                )
                start = time.perf_counter()
                detector.fit([category], progress=False)
                auroc = evaluate(detector, [category]).metrics["image_auroc"]
                results[variant].setdefault(name, []).append(auroc)
                print(
                    f"seed {seed} {name:5s} {variant:22s} image AUROC {auroc:.4f} "
                    f"({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
    print(f"\nmachine: {machine()}; adtr cpu {options}; {args.max_train} train cells/category")
    for variant, per in results.items():
        cells = ", ".join(f"{n} {np.mean(v):.4f} ± {np.std(v):.4f}" for n, v in per.items())
        print(f"{variant:22s} {cells}  (seeds {args.seeds})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
