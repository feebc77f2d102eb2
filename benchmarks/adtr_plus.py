"""ADTR vs ADTR+ on ELPV (per category), with the choices made on validation data first.

    .venv/bin/python benchmarks/adtr_plus.py --workers 1 --out bench_out/adtr_plus

Three stages, each a set of independent fits (run `--workers` at a time; on a GPU machine
several processes share the card):

1. ``size``   — ADTR's feature-map size, 16×16 (stride 16) vs 32×32 (stride 8) at 256 px.
2. ``select`` — ADTR+'s α (weight of the anomaly term) and k (top-k positions for image
   labels; ELPV has no masks) on a grid.
3. ``compare``— ADTR vs ADTR+ with 10 and 30 real labelled defects and with synthetic
   anomalies only, using the chosen size, α and k; image AUROC on the test set.

Stages 1–2 never look at the test set. Per category and seed, ELPV's seeded `anomaly_pool`
(30 defective cells, removed from the test set for *every* variant) is the labelled
training pool. Selection trains ADTR+ on its first 20 and scores image AUROC on validation
data: the detector's own held-out normal slice of train/good plus the pool's last 10
defects, which that fit never saw. The size stage trains plain ADTR and validates on the
same normals plus all 30 (plain ADTR trains on none). Choices: the best mean validation
AUROC over categories and seeds. Results are appended to ``OUT/results.jsonl`` as fits
finish; a rerun skips the fits already there.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from common import add_run_options, apply_run_options, machine

POOL = 30
SELECT_TRAIN = 20
STRIDES = (16, 8)
ALPHAS = (0.1, 1.0, 10.0)
TOPKS = (1, 10, 50)


def fit_one(job: dict, max_train: int, options: dict, threads: int) -> dict:
    """One fit and its AUROC (validation for size/select, test for compare)."""
    import torch

    import adformer
    from adformer.data.elpv import load_elpv
    from adformer.data.folders import validation_split
    from adformer.data.types import CategoryData
    from adformer.evaluation.evaluate import evaluate

    torch.set_num_threads(threads)
    (category,) = load_elpv(
        [job["category"]], seed=job["seed"], max_train=max_train, anomaly_pool=POOL
    )
    pool = category.anomalies
    settings = {**options, **job["settings"]}
    detector = adformer.create("adtr", "cpu", seed=job["seed"], **settings)
    if job["stage"] == "compare":
        category.anomalies = pool[: job["real"]]
        scored = category
    else:
        category.anomalies = pool[:SELECT_TRAIN] if job["stage"] == "select" else []
        held = pool[SELECT_TRAIN:] if job["stage"] == "select" else pool
        _, val_normals = validation_split(
            category.train, detector.config.val_fraction, detector.config.val_max
        )
        scored = CategoryData(category.name, [], val_normals + held, False)
    start = time.perf_counter()
    detector.fit([category], progress=False)
    auroc = evaluate(detector, [scored]).metrics["image_auroc"]
    return {**job, "auroc": auroc, "seconds": round(time.perf_counter() - start, 1)}


def key(job: dict) -> str:
    return json.dumps({k: job[k] for k in ("stage", "category", "seed", "variant")})


def run_stage(jobs, out: Path, args, options) -> list[dict]:
    """Run the jobs not yet in results.jsonl; return all results of these jobs."""
    results_file = out / "results.jsonl"
    done = {}
    if results_file.exists():
        for line in results_file.read_text().splitlines():
            record = json.loads(line)
            done[key(record)] = record
    todo = [j for j in jobs if key(j) not in done]
    threads = max(1, (os.cpu_count() or 2) // args.workers) if args.workers > 1 else args.threads
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(fit_one, j, args.max_train, options, threads) for j in todo]
        for future in as_completed(futures):
            record = future.result()
            done[key(record)] = record
            with results_file.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(
                f"{record['stage']:7s} {record['category']:4s} seed {record['seed']} "
                f"{record['variant']:24s} AUROC {record['auroc']:.4f} ({record['seconds']} s)",
                flush=True,
            )
    return [done[key(j)] for j in jobs]


def summarise(results: list[dict]) -> dict[str, dict[str, list[float]]]:
    """variant → category → AUROCs over seeds (in order)."""
    table: dict[str, dict[str, list[float]]] = {}
    for r in results:
        table.setdefault(r["variant"], {}).setdefault(r["category"], []).append(r["auroc"])
    return table


def report(title: str, table: dict, seeds) -> str:
    lines = [f"\n{title}"]
    for variant, per in table.items():
        cells = "  ".join(f"{n} {np.mean(v):.4f} ± {np.std(v):.4f}" for n, v in per.items())
        overall = np.mean([np.mean(v) for v in per.values()])
        lines.append(f"  {variant:26s} {cells}  mean {overall:.4f}  (seeds {list(seeds)})")
    print("\n".join(lines), flush=True)
    return "\n".join(lines)


def best(table: dict) -> str:
    """The variant with the best mean validation AUROC (first in grid order on a tie)."""
    means = {v: np.mean([np.mean(a) for a in per.values()]) for v, per in table.items()}
    return max(means, key=lambda v: (means[v], -list(means).index(v)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--categories", nargs="+", default=["mono", "poly"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-train", type=int, default=150)
    parser.add_argument("--synthetic", type=int, default=30)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", default="bench_out/adtr_plus")
    parser.add_argument("--stages", nargs="+", default=["size", "select", "compare"])
    add_run_options(parser)
    args = parser.parse_args()
    options = apply_run_options(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid = [(c, s) for s in args.seeds for c in args.categories]

    def jobs(stage, variants):
        return [
            {"stage": stage, "category": c, "seed": s, "variant": v, **spec}
            for v, spec in variants.items()
            for c, s in grid
        ]

    text = [f"machine: {machine()}; adtr cpu {options}; {args.max_train} train cells/category"]
    stride, chosen = 16, {}
    size_variants = {
        f"stride {st} ({256 // st}x{256 // st})": {"settings": {"feature_stride": st}}
        for st in STRIDES
    }
    select_variants = {
        f"alpha {a:g} k {k}": {"settings": {"anomaly_alpha": a, "anomaly_topk": k}}
        for a in ALPHAS
        for k in TOPKS
    }
    if "size" in args.stages or "select" in args.stages:
        staged = []
        if "size" in args.stages:
            staged += jobs("size", size_variants)
        if "select" in args.stages:
            staged += jobs("select", select_variants)
        results = run_stage(staged, out, args, options)
        if "size" in args.stages:
            table = summarise([r for r in results if r["stage"] == "size"])
            text.append(report("size: ADTR, validation image AUROC", table, args.seeds))
            stride = size_variants[best(table)]["settings"]["feature_stride"]
        if "select" in args.stages:
            table = summarise([r for r in results if r["stage"] == "select"])
            text.append(report("select: ADTR+ 20 real, validation image AUROC", table, args.seeds))
            chosen = select_variants[best(table)]["settings"]
        text.append(f"\nchosen: feature_stride {stride}, {chosen}")
    if "compare" in args.stages:
        base = {"feature_stride": stride}
        plus = {**base, **chosen}
        compare_variants = {
            "ADTR": {"settings": base, "real": 0},
            "ADTR+ 10 real": {"settings": plus, "real": 10},
            "ADTR+ 30 real": {"settings": plus, "real": 30},
            f"ADTR+ {args.synthetic} synthetic": {
                "settings": {**plus, "synthetic_anomalies": args.synthetic},
                "real": 0,
            },
        }
        table = summarise(run_stage(jobs("compare", compare_variants), out, args, options))
        text.append(report("compare: test image AUROC", table, args.seeds))
    (out / "summary.txt").write_text("\n".join(text) + "\n")


if __name__ == "__main__":
    main()
