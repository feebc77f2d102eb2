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
seeds), and per seed each configuration's difference from the preset on both. A few-shot
method also gets a second signal, on the tested category itself but from each test round's k
support images alone (`few_shot.support_validation`: each held out in turn), since `fit`'s
signal scores the categories it trained on. The fitted models are kept in ``OUT/models/``: a
later run with the same ``--out`` scores new configurations without fitting again.
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
from adformer.benchmark import (
    fit_plan,
    load_categories,
    mean_std,
    method_options,
    tested_metrics,
)
from adformer.evaluation.few_shot import support_sets, support_validation


def score_with(detector, trained, tested, options: dict, shots: int, rounds: int):
    """(validation, test, support validation) image AUROC of a detector fitted on `trained` with
    `options` set (`calibrate`: no training), tested on `tested`: means over categories. The
    support validation (few-shot only, else None) is taken on each test round's support images
    alone (`support_validation`), so it sees the tested category but no test image."""
    validation = detector.calibrate(trained, **options).validation_["image_auroc"]
    support = None
    if detector.learning_type == "few_shot":
        seed = detector.config.seed
        support = np.mean(
            [
                support_validation(detector, images, category.name, seed)["image_auroc"]
                for category in tested
                for images, _ in support_sets(category.train, shots, rounds, seed)
            ]
        )
    probe = copy.copy(detector)  # a few-shot test adapts it; `detector` stays unadapted
    return validation, tested_metrics(probe, tested, shots, rounds)["image_auroc"], support


def fitted(method, preset, options, trained, folder: Path | None):
    """A detector fitted on `trained`, or the one saved in `folder` by an earlier run."""
    if folder is not None and (folder / "config.json").exists():
        return adformer.load(folder), "loaded"
    detector = adformer.create(method, preset, **options)
    start = time.perf_counter()
    detector.fit(trained, progress=False)
    took = f"fit {time.perf_counter() - start:.0f} s"
    if folder is not None:
        detector.save(folder)
    return detector, took


def render(rows: dict[str, dict], configs: dict[str, dict], title: str) -> str:
    few_shot = any(row["support_by_seed"] for row in rows.values())
    extra = " support validation I-AUROC |" if few_shot else ""
    lines = [
        title,
        "",
        f"| configuration | options | validation I-AUROC |{extra} test I-AUROC | seeds |",
        "|---|---|---|---|---|" + ("---|" if few_shot else ""),
    ]

    for name, row in rows.items():
        val, test = ([pair[i] for pair in row["by_seed"].values()] for i in (0, 1))
        given = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in configs[name].items()) or "–"
        support = [pair[0] for pair in row["support_by_seed"].values()]
        middle = f" {mean_std(support)} |" if few_shot else ""
        lines.append(
            f"| {name} | {given} | {mean_std(val)} |{middle} {mean_std(test)} | {len(val)} |"
        )
    others = [n for n in rows if n != "preset"]
    lines += ["", *(agreement(n, rows[n], rows["preset"]) for n in others)]
    if few_shot and others:
        lines += ["", "On the support validation:"]
        lines += [
            agreement(
                n,
                {"by_seed": rows[n]["support_by_seed"]},
                {"by_seed": rows["preset"]["support_by_seed"]},
            )
            for n in others
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_grid_options(parser)
    parser.add_argument("--config", action="append", default=[], metavar="NAME:KEY=VALUE,...")
    parser.add_argument("--rounds", type=int, default=5, help="support sets per category")
    parser.add_argument(
        "--out", type=Path, help="folder for rescore.json, rescore.md and the fitted models"
    )
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
    found = {name: {} for name in configs}  # name → seed → [(validation, test, support)]
    for seed in args.seeds:
        categories = load_categories(args.data, args.categories, None, seed, args.max_train)
        for trained, tested in fit_plan(args.method, categories):
            names = "-".join(c.name for c in tested)
            folder = args.out / "models" / f"seed{seed}-{names}" if args.out else None
            run = {**options, "seed": seed}
            detector, took = fitted(args.method, args.preset, run, trained, folder)
            print(f"seed {seed}, {names}: {took}", flush=True)
            for name, given in configs.items():  # validated on the images `fit` held out
                found[name].setdefault(seed, []).append(
                    score_with(detector, trained, tested, base | given, args.shots, args.rounds)
                )
    rows = {}
    for name, by_seed in found.items():
        means = {
            s: np.mean(np.array(triples, dtype=float), axis=0) for s, triples in by_seed.items()
        }
        rows[name] = {
            "by_seed": {s: (m[0], m[1]) for s, m in means.items()},
            "support_by_seed": {s: (m[2], m[1]) for s, m in means.items() if not np.isnan(m[2])},
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
