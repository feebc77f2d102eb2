"""Detection quality over several seeds: mean ± std of the JSON-contract metrics.

    .venv/bin/python benchmarks/quality.py --data elpv --seeds 0 1 2
    .venv/bin/python benchmarks/quality.py --data ../shared/data --category hazelnut_toy
    .venv/bin/python benchmarks/quality.py --method intra --data synthetic --max-train 300

``--data synthetic`` generates the MVTec-layout texture set (data/synthetic.py: grating,
dots, checker with painted scratch/blob defects and masks) once, with data seed 0.

Seeds change the network initialisation and data order (and, for ELPV, the train/test split
of the good cells). Nothing is chosen on the test set: the weights are best-on-validation
(train/good hold-out) and the metrics are threshold-free.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
from common import add_run_options, apply_run_options, machine

import adformer
from adformer.benchmark import load_categories
from adformer.data.synthetic import TEXTURES, make_synthetic_dataset
from adformer.evaluation.evaluate import evaluate, merge
from adformer.runs import model_groups

KEYS = ("image_auroc", "pixel_auroc", "aupro")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", default="uniad")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--data", default="elpv")
    parser.add_argument("--category", nargs="+")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-train", type=int, help="training images per category (a subset)")
    parser.add_argument("--test-images", type=int, default=40, help="synthetic: good and defect")
    add_run_options(parser)
    parser.add_argument("--json")
    args = parser.parse_args()
    options = apply_run_options(args)

    if args.data == "synthetic":
        args.data = make_synthetic_dataset(
            tempfile.mkdtemp(),
            categories=args.category or TEXTURES,
            n_train=args.max_train or 300,
            n_test_good=args.test_images,
            n_test_defect=args.test_images,
            size=256,
        )
        args.category = None
    runs = []
    for seed in args.seeds:
        categories = load_categories(args.data, args.category, None, seed, args.max_train)
        groups = model_groups(args.method, categories)  # as the CLI does
        start = time.perf_counter()
        evaluations = []
        for group in groups:
            detector = adformer.create(args.method, args.preset, seed=seed, **options)
            detector.fit(group, progress=False)
            evaluations.append(evaluate(detector, group))
        fit_seconds = time.perf_counter() - start
        metrics = merge(evaluations).metrics
        runs.append(metrics)
        per = {n: round(m["image_auroc"], 4) for n, m in metrics["per_category"].items()}
        print(
            f"seed {seed}: fit + test {fit_seconds:.0f} s, "
            + ", ".join(f"{k} {metrics[k]:.4f}" for k in KEYS if metrics[k] is not None)
            + f", image AUROC per category {per}",
            flush=True,
        )

    print(f"\nmachine: {machine()}; {args.method} {args.preset} {options}; data {args.data}")
    summary = {}
    for key in KEYS:
        values = [r[key] for r in runs if r[key] is not None]
        if values:
            summary[key] = (float(np.mean(values)), float(np.std(values)))
            print(f"{key:12s} {np.mean(values):.4f} ± {np.std(values):.4f} over seeds {args.seeds}")
    for name in runs[0]["per_category"]:
        values = [r["per_category"][name]["image_auroc"] for r in runs]
        print(f"  {name:12s} image AUROC {np.mean(values):.4f} ± {np.std(values):.4f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"runs": runs, "summary": summary}, handle, indent=2)


if __name__ == "__main__":
    main()
