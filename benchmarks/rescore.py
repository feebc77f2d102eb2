"""Options that change no training, compared on one fit per seed: the method's
`scoring_options` (every method: the score windows `score_pool`; RegAD also `scoring`,
`feature_pool`, `channels`, `covariance_eps`, `blur_sigma`, which only `adapt` uses). Each seed's
models are fitted once, on the split of `adformer benchmark`, and scored with each
configuration: `fit`'s validation signal (held-out good images vs synthetic defects; for a
few-shot method, adapted to its training categories), what the choice is made on, beside the
test. A few-shot method is fitted leave-one-out and tested with k support images, as the
benchmark does. Where `benchmarks/ablation.py` fits every configuration afresh, this costs one
fit per seed whatever the number of configurations.

    .venv/bin/python benchmarks/rescore.py --method regad --data elpv --max-train 150 \\
        --seeds 0 1 2 --config nearest:scoring=nearest --config pool3:feature_pool=3

    .venv/bin/python benchmarks/rescore.py --method uniad --data elpv --max-train 150 \\
        --config p48:score_pool=48 --config p64:score_pool=64

The preset as it is is always scored (``preset``). Prints, and writes to ``--out`` (JSON and a
Markdown table), one row per configuration: validation and test image AUROC (mean ± std over
seeds), and per seed each configuration's difference from the preset on both.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
from common import add_grid_options, agreement, machine, parse_config

import adformer
from adformer.benchmark import fit_plan, load_categories, method_options, tested_metrics


def score_with(detector, trained, tested, options: dict, shots: int, rounds: int):
    """(validation, test) image AUROC of a detector fitted on `trained` with `options` set
    (`calibrate`: no training), tested on `tested`: means over categories."""
    validation = detector.calibrate(trained, **options).validation_["image_auroc"]
    probe = copy.copy(detector)  # a few-shot test adapts it; `detector` stays unadapted
    return validation, tested_metrics(probe, tested, shots, rounds)["image_auroc"]


def render(rows: dict[str, dict], configs: dict[str, dict], title: str) -> str:
    lines = [
        title,
        "",
        "| configuration | options | validation I-AUROC | test I-AUROC | seeds |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        val, test = (np.array([pair[i] for pair in row["by_seed"].values()]) for i in (0, 1))
        given = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in configs[name].items()) or "–"
        lines.append(
            f"| {name} | {given} | {val.mean():.3f} ± {val.std():.3f} "
            f"| {test.mean():.3f} ± {test.std():.3f} | {len(val)} |"
        )
    lines += ["", *(agreement(n, r, rows["preset"]) for n, r in rows.items() if n != "preset")]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_grid_options(parser)
    parser.add_argument("--config", action="append", default=[], metavar="NAME:KEY=VALUE,...")
    parser.add_argument("--rounds", type=int, default=5, help="support sets per category")
    parser.add_argument("--out", type=Path, help="folder for rescore.json and rescore.md")
    args = parser.parse_args()

    options = method_options(args.method, args.shots, {})  # trained for the k it is tested with
    configs = dict([("preset", {}), *(parse_config(c) for c in args.config)])
    fresh = adformer.create(args.method, args.preset, **options)
    allowed = fresh.scoring_options
    for name, given in configs.items():
        if set(given) - set(allowed):
            raise SystemExit(f"--config {name}: only {', '.join(allowed)} change no training")
    # each configuration is the preset's scoring plus its own options
    base = {k: getattr(fresh.config, k) for k in allowed}
    found = {name: {} for name in configs}  # name → seed → [(validation, test) per model]
    for seed in args.seeds:
        categories = load_categories(args.data, args.categories, None, seed, args.max_train)
        for trained, tested in fit_plan(args.method, categories):
            detector = adformer.create(args.method, args.preset, seed=seed, **options)
            start = time.perf_counter()
            detector.fit(trained, progress=False)
            names = ", ".join(c.name for c in tested)
            print(f"seed {seed}, {names}: fit {time.perf_counter() - start:.0f} s", flush=True)
            for name, given in configs.items():  # validated on the images `fit` held out
                pair = score_with(detector, trained, tested, base | given, args.shots, args.rounds)
                found[name].setdefault(seed, []).append(pair)
    rows = {
        name: {"by_seed": {s: tuple(np.mean(pairs, axis=0)) for s, pairs in by_seed.items()}}
        for name, by_seed in found.items()
    }
    title = f"{args.method}, `{args.preset}` preset, `--data {args.data}`"
    title += f" (max {args.max_train} training images)" if args.max_train else ""
    text = render(rows, configs, f"{title}; one fit per seed; {machine()}")
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rescore.md").write_text(text)
        (args.out / "rescore.json").write_text(json.dumps({"configs": configs, "rows": rows}))


if __name__ == "__main__":
    main()
