"""adformer beside anomalib's PaDiM and PatchCore: same images, same split, same
EfficientNet-Lite0 ImageNet weights, same machine, one run.

    .venv/bin/pip install -e ".[peers]"
    .venv/bin/python benchmarks/peers.py --data elpv --max-train 150 --seeds 0 --methods uniad adtr

`adformer benchmark --peers` is the general command; this script adds ELPV's `--max-train`
(the split of `make demo`) and adformer's validation signal. The peers are
`adformer.evaluation.peers` (anomalib's torch models, Lite0 weights, 256 px). They train
on every ``train/good`` image of a category; adformer holds out 10 % (at most 20) of them
for validation, as `adformer fit` does. Test images and metrics are identical for all.
``validation`` columns are adformer's own no-test-label signal (held-out good images vs
synthetic defects painted on them).
"""

from __future__ import annotations

import argparse
import time

import torch
from common import add_run_options, apply_run_options, load_categories, machine

import adformer
from adformer.evaluation.evaluate import evaluate
from adformer.evaluation.peers import Peer
from adformer.runs import model_groups


def run_peer(name: str, category, seed: int) -> tuple[dict, float]:
    """A peer's metrics on one category (trained on all its good images) and its fit time."""
    start = time.perf_counter()
    peer = Peer(name, seed).fit(category.train)
    fit = time.perf_counter() - start
    return evaluate(peer, [category]).metrics["per_category"][category.name], fit


def run_adformer(method, categories, preset, seed, options) -> dict[str, dict]:
    """{category: metrics} with fit time and validation, one model per category unless the
    method is unified."""
    out = {}
    for group in model_groups(method, categories):
        torch.manual_seed(seed)
        start = time.perf_counter()
        detector = adformer.create(method, preset, seed=seed, **options)
        detector.fit(group, progress=False)
        fit = time.perf_counter() - start
        metrics = evaluate(detector, group).metrics["per_category"]
        for name, result in metrics.items():
            out[name] = result | {"fit_s": fit / len(group), "validation": detector.validation_}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="elpv")
    parser.add_argument("--categories", nargs="+")
    parser.add_argument("--max-train", type=int, help="ELPV: good training cells per category")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=["uniad", "adtr"])
    parser.add_argument("--peers", nargs="*", default=["padim", "patchcore"])
    parser.add_argument("--preset", default="cpu")
    add_run_options(parser)
    args = parser.parse_args()
    options = apply_run_options(args)
    rows = []
    for seed in args.seeds:
        categories = load_categories(args.data, args.categories, seed, args.max_train)
        for name in args.peers:
            for category in categories:
                result, fit = run_peer(name, category, seed)
                rows.append((seed, name, category.name, result, fit, None))
                print(seed, name, category.name, result, f"fit {fit:.0f} s", flush=True)
        for method in args.methods:
            for category, r in run_adformer(method, categories, args.preset, seed, options).items():
                rows.append((seed, method, category, r, r["fit_s"], r["validation"]))
                print(seed, method, category, r, flush=True)
    print(f"\nmachine: {machine()}; threads {args.threads}; preset {args.preset} {options}")
    print("| seed | model | category | image AUROC | pixel AUROC | fit s | validation I / P |")
    print("|---|---|---|---|---|---|---|")
    for seed, model, category, r, fit, val in rows:
        pixel = "-" if r.get("pixel_auroc") is None else f"{r['pixel_auroc']:.4f}"
        checked = "-" if not val else f"{val['image_auroc']:.3f} / {val['pixel_auroc']:.3f}"
        print(
            f"| {seed} | {model} | {category} | {r['image_auroc']:.4f} | {pixel} | {fit:.0f} "
            f"| {checked} |"
        )
    print("\nadformer minus the best peer (image AUROC), per seed and category:")
    for seed, model, category, r, _, _ in rows:
        if model in args.peers:
            continue
        peers = [p for p in rows if p[0] == seed and p[2] == category and p[1] in args.peers]
        if not peers:
            continue
        best = max(p[3]["image_auroc"] for p in peers)
        print(f"  seed {seed} {model:6s} {category:10s} {r['image_auroc'] - best:+.4f}")


if __name__ == "__main__":
    main()
