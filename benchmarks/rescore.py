"""Options that change no training, compared on one fit per seed: the method's
`scoring_options` (every method: the score windows `score_pool`; RegAD also `scoring`,
`feature_pool`, `channels`, `covariance_eps`, `covariance`, `blur_sigma`, which only `adapt`
uses). Each seed's models are fitted once, on the split of `adformer benchmark`, and scored
with each configuration: `fit`'s validation signal (held-out good images vs synthetic defects;
for a few-shot method, adapted to its training categories), what the choice is made on, beside the
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
signal scores the categories it trained on. With ``--labelled-validation N`` (ELPV) N
defective cells per category leave the test set and become a third signal, what a user who
has labelled some defects would choose on: scored against `fit`'s held-out good images, or
for a few-shot method against each support image held out in turn (never adapted on). The
fitted models are kept in ``OUT/models/``: a later run with the same ``--out`` scores new
configurations without fitting again, and each model's scores are kept beside it (keyed by the
whole scoring configuration): a configuration scored once is not scored again. ``--peers
padim patchcore`` runs the peers on the same split and seeds (beside a few-shot method: trained
on the same k support images), their test in the same table, kept in ``OUT/peers/``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
from common import add_grid_options, agreement, machine, parse_config, run_peers

import adformer
from adformer.benchmark import (
    fit_plan,
    grid_cells,
    labelled_auroc,
    load_categories,
    mean_std,
    method_options,
    seed_values,
    tested_metrics,
)
from adformer.engine import fingerprint_of
from adformer.evaluation.few_shot import round_validations


def score_with(detector, trained, tested, options: dict, shots: int, rounds: int) -> dict:
    """The image AUROCs of a detector fitted on `trained` with `options` set (`calibrate`: no
    training), tested on `tested` (means over categories): ``validation`` (`fit`'s signal),
    ``test``, and where they apply ``support`` (few-shot: each test round's support images
    alone, `support_validation`, so it sees the tested category but no test image) and
    ``labelled`` (labelled defects moved out of the test set, `--labelled-validation`: against
    the support images held out in turn, or `fit`'s held-out good images)."""
    found = {"validation": detector.calibrate(trained, **options).validation_["image_auroc"]}
    if detector.learning_type == "few_shot":
        seed = detector.config.seed
        folds = [f for c in tested for f in round_validations(detector, c, shots, rounds, seed)]
        found["support"] = np.mean([f["image_auroc"] for f in folds])
        labelled = [f["labelled"]["image_auroc"] for f in folds if "labelled" in f]
    else:
        labelled = [labelled_auroc(detector, c) for c in tested if c.anomalies]
    if labelled:
        found["labelled"] = np.mean(labelled)
    probe = copy.copy(detector)  # a few-shot test adapts it; `detector` stays unadapted
    return found | {"test": tested_metrics(probe, tested, shots, rounds)["image_auroc"]}


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


def grid_models(args):
    """Each model of the grid `args` names (`add_grid_options`), trained for the k it is
    tested with, as (seed, trained, tested, folder, detector, took): fitted, or loaded from
    ``args.out/models`` where an earlier run kept it. `trained` has no labelled defects."""
    options = method_options(args.method, args.shots, {})
    for seed in args.seeds:
        categories = load_categories(
            args.data, args.categories, None, seed, args.max_train, args.labelled_validation
        )
        for trained, tested in fit_plan(args.method, categories):
            names = "-".join(c.name for c in tested)
            folder = args.out / "models" / f"seed{seed}-{names}" if args.out else None
            run = {**options, "seed": seed}
            detector, took = fitted(args.method, args.preset, run, trained, folder)
            yield seed, trained, tested, folder, detector, took


# the validation signals a row may have besides `fit`'s, and their column names
SIGNALS = {"support": "support validation", "labelled": "labelled validation"}


def render(rows: dict[str, dict], configs: dict[str, dict], peers: dict, title: str) -> str:
    """The table: each configuration's validation signals and test, then each peer's test on
    the same split (`peers`: name → one test image AUROC per seed), each configuration's
    difference from the preset per seed, and from the best peer."""
    shown = [k for k in SIGNALS if any(row[k] for row in rows.values())]
    extra = "".join(f" {SIGNALS[k]} I-AUROC |" for k in shown)
    lines = [
        title,
        "",
        f"| configuration | options | validation I-AUROC |{extra} test I-AUROC | seeds |",
        "|---|---|---|---|---|" + "---|" * len(shown),
    ]
    for name, row in rows.items():
        val, test = ([pair[i] for pair in row["by_seed"].values()] for i in (0, 1))
        given = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in configs[name].items()) or "–"
        middle = "".join(f" {mean_std([p[0] for p in row[k].values()])} |" for k in shown)
        lines.append(
            f"| {name} | {given} | {mean_std(val)} |{middle} {mean_std(test)} | {len(val)} |"
        )
    dashes = " – |" * (1 + len(shown))
    lines += [f"| {n} | peer |{dashes} {mean_std(t)} | {len(t)} |" for n, t in peers.items()]
    if peers:
        best = max(peers, key=lambda n: np.mean(peers[n]))
        gaps = [
            f"{n} {np.mean([p[1] for p in r['by_seed'].values()]) - np.mean(peers[best]):+.3f}"
            for n, r in rows.items()
        ]
        lines += ["", f"Test minus {best} (mean over seeds): {'; '.join(gaps)}"]
    others = [n for n in rows if n != "preset"]
    lines += ["", *(agreement(n, rows[n], rows["preset"]) for n in others)]
    for key in shown if others else []:
        lines += ["", f"On the {SIGNALS[key]}:"]
        lines += [
            agreement(n, {"by_seed": rows[n][key]}, {"by_seed": rows["preset"][key]})
            for n in others
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_grid_options(parser)
    parser.add_argument("--config", action="append", default=[], metavar="NAME:KEY=VALUE,...")
    parser.add_argument(
        "--out", type=Path, help="folder for rescore.json, rescore.md and the fitted models"
    )
    args = parser.parse_args()
    if args.labelled_validation and args.data != "elpv":
        parser.error("--labelled-validation takes ELPV's defective cells: --data elpv")
    if args.peers and not args.out:
        parser.error("--peers keeps the peers' grid in --out: give one")

    options = method_options(args.method, args.shots, {})  # trained for the k it is tested with
    configs = dict([("preset", {}), *(parse_config(c) for c in args.config)])
    fresh = adformer.create(args.method, args.preset, **options)
    allowed = fresh.scoring_options
    for name, given in configs.items():
        if set(given) - set(allowed):
            raise SystemExit(f"--config {name}: only {', '.join(allowed)} change no training")
    # each configuration is the preset's scoring plus its own options
    base = {k: getattr(fresh.config, k) for k in allowed}
    found = {name: {} for name in configs}  # name → seed → [score_with's dict per model]
    for seed, trained, tested, folder, detector, took in grid_models(args):
        names = "-".join(c.name for c in tested)
        print(f"seed {seed}, {names}: {took}", flush=True)
        # each configuration's scores, kept beside the model: a later run scores only new ones
        cache = folder / "scores.json" if folder else None
        known = json.loads(cache.read_text()) if cache and cache.exists() else {}
        for name, given in configs.items():  # validated on the images `fit` held out
            protocol = {"shots": args.shots, "rounds": args.rounds}
            key = fingerprint_of(base | given | protocol | {"labelled": args.labelled_validation})
            if key not in known:
                scores = score_with(detector, trained, tested, base | given, **protocol)
                known[key] = {k: float(v) for k, v in scores.items()}
                if cache:
                    cache.write_text(json.dumps(known, indent=1))
            scores = known[key]
            found[name].setdefault(seed, []).append(scores)
            print(f"  {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), flush=True)
    rows = {}
    for name, by_seed in found.items():
        # per seed, each signal's mean over the seed's models, paired with the test's
        means = {
            s: {k: np.mean([d[k] for d in dicts]) for k in dicts[0]} for s, dicts in by_seed.items()
        }
        rows[name] = {"by_seed": {s: (m["validation"], m["test"]) for s, m in means.items()}}
        rows[name] |= {
            k: {s: (m[k], m["test"]) for s, m in means.items() if k in m} for k in SIGNALS
        }
    peers = {}  # name → the test's mean image AUROC per seed, on the same split
    if args.peers:
        names = run_peers(args, args.out / "peers")
        cells = grid_cells(args.out / "peers", names, args.seeds)
        peers = {n: seed_values(cells, n, "mean", "image_auroc") for n in names}
    title = f"{args.method}, `{args.preset}` preset, `--data {args.data}`"
    title += f" (max {args.max_train} training images)" if args.max_train else ""
    text = render(rows, configs, peers, f"{title}; one fit per seed; {machine()}")
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rescore.md").write_text(text)
        (args.out / "rescore.json").write_text(json.dumps({"configs": configs, "rows": rows}))


if __name__ == "__main__":
    main()
