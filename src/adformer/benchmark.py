"""`adformer benchmark`: methods (and anomalib's PaDiM and PatchCore as peers) over seeds on
one data set, same split, same weights, one run, in one table.

Every cell (model × seed) is fitted, tested and written to ``OUT/cells/<model>-seed<s>.json``
with its fit time, test images/s and peak memory; a rerun skips the cells already there, so
an interrupted grid resumes and a finished one re-renders ``results.csv``, ``results.md`` and
``results.html`` (the same with charts) in seconds. One-class methods fit one model per
category, unified ones one model for all, few-shot ones leave each category out in turn and
are tested on it with k support images (``shots``, ``rounds`` support sets). Each cell runs
in a fresh process.

>>> run_benchmark("elpv", ["uniad", "adtr"], "bench", seeds=[0, 1, 2], preset="cpu",
...               peers=["padim", "patchcore"])  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adformer.data.types import CategoryData
from adformer.errors import AdformerError
from adformer.evaluation.report import benchmark_page

COLUMNS = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max")
HEADERS = ("I-AUROC", "P-AUROC", "AUPRO", "F1-max")
# `fit`'s validation signal: held-out good images against the same with synthetic defects
VALIDATION = ("image_auroc", "pixel_auroc")
COST = ("fit_s", "images_per_s", "peak_mb")


def run_benchmark(
    data,
    methods: Sequence[str],
    out: str | Path,
    *,
    categories: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    peers: Sequence[str] = (),
    preset: str | None = None,
    layout: str | None = None,
    shots: int = 4,
    rounds: int = 5,
    max_train: int | None = None,
    shot_peers: bool = False,
    labelled_validation: int = 0,
    progress: bool = False,
    **options,
) -> Path:
    """Run (or resume) the grid and write ``results.csv`` and ``results.md`` in `out`;
    returns the path of ``results.md``.

    With `progress`, a line per cell on stderr as it starts and ends, and each fit's progress
    bar. `max_train` caps the good training images per category (a seeded subset; on ELPV the
    split of ``make demo`` with 150). A rerun must use the settings the folder was made with.
    Beside a few-shot method each peer also runs on the same k support images; `shot_peers`
    runs the peers only that way (an ablation of a few-shot method keeps them in a folder of
    their own).

    `labelled_validation` = N (ELPV only) moves N seeded defective cells per category out of
    the test set and scores each fitted model on them against `fit`'s held-out good images
    (a few-shot model: against each support image of the test's rounds held out in turn):
    the validation of a user who has labelled defects, beside the synthetic one, never
    trained or adapted on (a method that could learn from them is fitted without them).
    """
    import adformer
    from adformer.evaluation.peers import PEERS

    # options are checked before anything runs
    detectors = {
        m: adformer.create(m, preset, **method_options(m, shots, options)) for m in methods
    }
    kinds = {m: d.learning_type for m, d in detectors.items()}
    # what each method's preset and options resolve to: a finished cell is reused only if it
    # was fitted with the same (a preset can change between runs while its name stays)
    configs = {m: _as_stored(d.config) for m, d in detectors.items()}
    # an option added since a cell was fitted ran at its default (what the code did before it)
    defaults = {m: _as_stored(type(d.config)()) for m, d in detectors.items()}
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        raise AdformerError(f"unknown peers {unknown}: choose from {', '.join(PEERS)}")
    few_shot = {m for m, kind in kinds.items() if kind == "few_shot"}
    # beside a few-shot method, each peer is also trained on the same k support images
    few_peers = shot_peer_names(peers, shots) if few_shot or shot_peers else []
    models = [*methods, *([] if shot_peers else peers), *few_peers]
    # and what each peer is fitted with (PatchCore's coreset)
    configs |= {m: grid_peer(m).settings for m in models if m not in detectors}
    if labelled_validation and str(data) != "elpv":
        raise AdformerError("labelled_validation takes ELPV's defective cells: --data elpv")
    out = Path(out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    settings = {"data": str(data), "preset": preset, "options": options, "shots": shots}
    settings |= {"rounds": rounds, "max_train": max_train, "layout": layout}
    if labelled_validation:  # the test set is another
        settings["labelled_validation"] = labelled_validation
    _check_cells(out, settings, configs, defaults)
    total, number = len(seeds) * len(models), 0
    for seed in seeds:
        found = load_categories(data, categories, layout, seed, max_train, labelled_validation)
        for model in models:
            number += 1
            name = f"[{number}/{total}] {model} seed {seed}"
            path = out / "cells" / f"{model}-seed{seed}.json"
            if path.is_file():  # finished in an earlier run (checked above)
                _say(progress, f"{name}: finished in an earlier run")
                continue
            _say(progress, f"{name}: fitting and testing")
            start = time.perf_counter()
            if model in few_peers:
                task = (_few_shot_peer_cell, model, found, seed, shots, rounds)
            elif model in PEERS:
                task = (_peer_cell, model, found, seed)
            else:
                args = (model, found, seed, preset, shots, rounds, progress, options)
                task = (_method_cell, *args)
            cell = _in_own_process(*task)
            cell |= {"model": model, "seed": seed, "settings": settings, "config": configs[model]}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(cell, indent=2))
            os.replace(tmp, path)
            _say(progress, f"{name}: done in {time.perf_counter() - start:.0f} s")
    cells = grid_cells(out, models, seeds)
    _write_csv(cells, out / "results.csv")
    markdown = render(cells, list(methods), list(peers), few_shot, few_peers)
    (out / "results.md").write_text(markdown)
    shown = [m for m in models if any(c["model"] == m for c in cells)]
    categories = sorted({n for c in cells for n in c["per_category"]})
    stats = {
        (model, category): {key: seed_values(cells, model, category, key) for key in COLUMNS}
        for model in shown
        for category in [*categories, "mean"]
    }
    rivals = [m for m in shown if m in (*peers, *few_peers)]
    page = benchmark_page(stats, categories, shown, rivals, markdown, settings)
    (out / "results.html").write_text(page)
    return out / "results.md"


def grid_cells(out: Path, models: Sequence[str], seeds: Sequence[int]) -> list[dict]:
    """The finished cells of a grid's folder of `models` at `seeds`, in file order."""
    cells = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    return [c for c in cells if c["model"] in models and c["seed"] in seeds]


def shot_peer_names(peers: Sequence[str], shots: int) -> list[str]:
    """The grid's names of the peers trained on the same k support images as a few-shot
    method (``patchcore-k4``)."""
    return [f"{p}-k{shots}" for p in peers]


def grid_peer(model: str, seed: int = 0):
    """The peer a grid's model name stands for (``patchcore``, ``patchcore-k4``), unfitted:
    on a few-shot method's k support images PatchCore keeps every patch (issue 10: "keep every
    patch: no coreset"), on a whole category anomalib's 1 % coreset."""
    from adformer.evaluation.peers import Peer

    name, _, shots = model.partition("-")
    return Peer(name, seed, coreset=1.0) if shots else Peer(name, seed)


def _as_stored(config) -> dict:
    """A method's configuration as a cell stores it (JSON: tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _check_cells(out: Path, settings: dict, configs: dict[str, dict], defaults: dict) -> None:
    """Finished cells are reused only for the grid they belong to, and a model's only if it
    was fitted with the configuration its preset and options (a peer: its settings) give now
    (a preset can change while its name stays; a method's cells written before configs were
    stored are trusted, and an option a cell does not list is taken at its default, which is
    what the code did before the option existed). Checked before anything runs."""
    from adformer.evaluation.peers import PEERS

    now = json.loads(json.dumps(settings))  # as the cells store them
    for path in sorted((out / "cells").glob("*.json")):
        cell = json.loads(path.read_text())
        before = cell.get("settings")
        if before is not None and before != now:
            changed = sorted(k for k in now if before.get(k) != now[k])
            raise AdformerError(
                f"{out} holds a grid run with other settings ({', '.join(changed)} differ, "
                f"e.g. {path.name}): give another --out, or the same settings to resume"
            )
        config, fitted = configs.get(cell["model"]), cell.get("config")
        base = cell["model"].partition("-")[0]
        if fitted is None and base in PEERS:
            # a peer's cell from before cells stored its settings was fitted with the peer's
            # defaults (a 1 % coreset, on k support images too): a k-shot PatchCore is refitted
            fitted = grid_peer(base).settings
        elif fitted is not None:
            fitted = {**defaults.get(cell["model"], {}), **fitted}
        if None not in (config, fitted) and fitted != config:
            changed = sorted(k for k in config if fitted.get(k) != config[k])
            raise AdformerError(
                f"{path} was fitted with another configuration ({', '.join(changed)} differ: "
                "the preset or peer changed since?): give another --out, or remove that cell to "
                "fit it again"
            )


def load_categories(data, categories, layout, seed, max_train, anomaly_pool=0):
    """The categories of one seed of the grid: `data`'s (or ELPV's seeded split, with
    `anomaly_pool` defective cells per category out of its test set), each with at most
    `max_train` good training images, a subset drawn with `seed`."""
    if str(data) == "elpv":  # its split is seeded
        from adformer.data.elpv import load_elpv

        return load_elpv(categories, seed=seed, max_train=max_train, anomaly_pool=anomaly_pool)
    from adformer.data import load_root

    found = load_root(data, categories, layout)
    if max_train is not None:
        rng = np.random.default_rng(seed)
        for category in found:
            if len(category.train) > max_train:
                keep = sorted(rng.choice(len(category.train), max_train, replace=False))
                category.train = [category.train[i] for i in keep]
    return found


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"benchmark {text}", file=sys.stderr, flush=True)


def _in_own_process(function, *args) -> dict:
    """A cell in a fresh process: nothing one model leaves behind (memory held by the
    allocator, threads, caches) reaches the next. Where the OS has it, the process is forked
    from a server that imported torch, timm and this module once and has run nothing (a
    spawned cell spent ~8 s of 2 cores importing them again); its peak memory then starts at
    the server's and reads lower than a spawned cell's (a `tiny` UniAD cell: 586 MB against
    893 MB), so peaks compare within runs of one start method."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["torch", "timm", __name__])
    else:
        context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(_measured, function, *args).result()


def _measured(function, *args) -> dict:
    return function(*args) | {"peak_mb": peak_memory_mb()}


def peak_memory_mb() -> float | None:
    """This process's peak resident memory in MB (Linux's VmHWM: unlike ``ru_maxrss`` not
    carried over from a parent it was spawned by; a forked process starts at its parent's),
    None where the OS does not say; on a GPU, plus torch's peak allocation (when torch is in
    use)."""
    try:
        with open("/proc/self/status") as handle:
            lines = [line for line in handle if line.startswith("VmHWM:")]
    except OSError:
        return None
    if not lines:
        return None
    peak = int(lines[0].split()[1]) / 1024  # kB
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        peak += torch.cuda.max_memory_allocated() / 2**20
    return peak


def method_options(method: str, shots: int, options: dict) -> dict:
    """A few-shot method is trained for the k it is tested with, as RegAD trains one model per
    k (arXiv:2207.07361 §4.1; official code: ``--shot`` sets the training pairs too)."""
    from adformer.methods.registry import get

    return {"shots": shots, **options} if get(method).learning_type == "few_shot" else options


def fit_plan(method: str, found: list[CategoryData]) -> list[tuple[list, list]]:
    """The models of a method's cell, each as (categories trained on, categories tested on):
    a few-shot method leaves each category out in turn and is tested on it; the others fit
    one model per category or one for all (`adformer.runs.model_groups`), tested on them.
    The grid's labelled defects (`labelled_validation`) are for validation only: the trained
    categories come without them, the tested ones keep them."""
    from adformer.methods.registry import get
    from adformer.runs import model_groups

    def unlabelled(categories: list[CategoryData]) -> list[CategoryData]:
        return [dataclasses.replace(c, anomalies=[]) for c in categories]

    if get(method).learning_type != "few_shot":
        return [(unlabelled(group), group) for group in model_groups(method, found)]
    if len(found) < 2:
        raise AdformerError(f"{method} is tested leave-one-out: give 2+ categories")
    return [(unlabelled([c for c in found if c is not one]), [one]) for one in found]


def tested_metrics(detector, tested: list[CategoryData], shots: int, rounds: int) -> dict:
    """A fitted model's test metrics on `tested`, as its cell takes them: a few-shot one
    adapted to `rounds` sets of k = `shots` support images per category (seeded by its
    config), averaged."""
    from adformer.evaluation.evaluate import evaluate
    from adformer.evaluation.few_shot import evaluate_few_shot

    if detector.learning_type == "few_shot":
        return evaluate_few_shot(detector, tested, shots, rounds, detector.config.seed)
    return evaluate(detector, tested).metrics


def _method_cell(method, found, seed, preset, shots, rounds, progress, options) -> dict:
    import adformer

    per_category, fit_s, test_s, images, validations = {}, 0.0, 0.0, 0, []
    labelled = []
    for trained, tested in fit_plan(method, found):
        detector = adformer.create(
            method, preset, seed=seed, **method_options(method, shots, options)
        )
        start = time.perf_counter()
        detector.fit(trained, progress=progress)
        fit_s += time.perf_counter() - start
        validations.append(detector.validation_)
        labelled += [labelled_auroc(detector, c, shots, rounds) for c in tested if c.anomalies]
        start = time.perf_counter()
        per_category |= tested_metrics(detector, tested, shots, rounds)["per_category"]
        test_s += time.perf_counter() - start
        adapted = (rounds or 1) if detector.learning_type == "few_shot" else 1
        images += sum(len(c.test) for c in tested) * adapted
    cell = _cell(per_category, fit_s, images / max(test_s, 1e-9))
    known = [v for v in validations if v]
    if known:  # the signal `fit` chooses on, beside the test metrics it must not see
        cell["validation"] = {k: float(np.mean([v[k] for v in known])) for k in VALIDATION}
    if labelled:
        cell["labelled_validation"] = {"image_auroc": float(np.mean(labelled))}
    return cell


def labelled_auroc(detector, category: CategoryData, shots: int = 4, rounds: int = 5) -> float:
    """Image AUROC of a fitted detector's held-out good images of `category` (those `fit`
    kept out of training) against its labelled defects; a few-shot detector's, averaged over
    the test's `rounds` support sets of `shots` images, each image of a set held out in turn
    (`support_validation`: a new category has no other good image)."""
    from adformer.evaluation.few_shot import round_validations
    from adformer.evaluation.metrics import auroc

    if detector.learning_type == "few_shot":
        rounds = rounds or detector.config.rounds
        found = round_validations(detector, category, shots, rounds, detector.config.seed)
        return float(np.mean([f["labelled"]["image_auroc"] for f in found]))
    held_out = detector._split([dataclasses.replace(category, anomalies=[])]).val
    paths = [s.path for s in held_out + category.anomalies]
    labels = np.r_[np.zeros(len(held_out)), np.ones(len(category.anomalies))]
    return float(auroc(labels, detector.predict(paths).scores))


def _peer_cell(model, found, seed) -> dict:
    from adformer.evaluation.evaluate import evaluate

    per_category, fit_s, test_s, images = {}, 0.0, 0.0, 0
    for category in found:  # one model per category, trained on all its good images
        start = time.perf_counter()
        peer = grid_peer(model, seed).fit(category.train)
        fit_s += time.perf_counter() - start
        start = time.perf_counter()
        per_category |= evaluate(peer, [category]).metrics["per_category"]
        test_s += time.perf_counter() - start
        images += len(category.test)
    return _cell(per_category, fit_s, images / max(test_s, 1e-9))


def _few_shot_peer_cell(model, found, seed, shots, rounds) -> dict:
    """A peer per category and support set: trained on exactly the k images the few-shot
    method is adapted to (`support_sets`, same seed), PatchCore keeping all their patches;
    metrics averaged over the sets."""
    from adformer.evaluation.evaluate import average, evaluate, merge
    from adformer.evaluation.few_shot import support_sets

    per_category, fit_s, test_s, images = {}, 0.0, 0.0, 0
    for category in found:
        evaluations = []
        for support, _ in support_sets(category.train, shots, rounds, seed):
            start = time.perf_counter()
            peer = grid_peer(model, seed).fit(support)
            fit_s += time.perf_counter() - start
            start = time.perf_counter()
            evaluations.append(evaluate(peer, [category]))
            test_s += time.perf_counter() - start
            images += len(category.test)
        metrics = average([merge([e]) for e in evaluations])
        per_category[category.name] = metrics["per_category"][category.name]
    return _cell(per_category, fit_s, images / max(test_s, 1e-9))


def _cell(per_category: dict, fit_s: float, images_per_s: float) -> dict:
    keep = {name: {k: m.get(k) for k in COLUMNS} for name, m in per_category.items()}
    return {"per_category": keep, "fit_s": fit_s, "images_per_s": images_per_s}


def _write_csv(cells: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        validation = [f"validation_{k}" for k in VALIDATION] + ["labelled_validation_image_auroc"]
        writer.writerow(["model", "seed", "category", *COLUMNS, *validation, *COST])
        for c in cells:
            checked = [validation_of(c, k) for k in VALIDATION] + [labelled_of(c)]
            for name, m in c["per_category"].items():
                row = [c["model"], c["seed"], name, *(m.get(k) for k in COLUMNS), *checked]
                writer.writerow([*row, *(c[k] for k in COST)])


def validation_of(cell: dict, key: str) -> float | None:
    """`fit`'s validation `key` of a cell; None for peers and cells written before it."""
    return (cell.get("validation") or {}).get(key)


def labelled_of(cell: dict) -> float | None:
    """A cell's image AUROC on labelled defects (`labelled_validation`); None without them."""
    return (cell.get("labelled_validation") or {}).get("image_auroc")


def seed_values(cells: list[dict], model: str, category: str, key: str) -> list[float]:
    """One value per seed of `model` on `category` (``"mean"``: the mean over categories)."""
    out = []
    for c in cells:
        if c["model"] != model:
            continue
        if category == "mean":
            known = [m.get(key) for m in c["per_category"].values() if m.get(key) is not None]
            out.append(float(np.mean(known)) if known else None)
        else:
            out.append(c["per_category"].get(category, {}).get(key))
    return [v for v in out if v is not None]


def mean_std(values: list, digits: int = 3) -> str:
    """``mean ± std`` over seeds (sample std), the value alone for one, ``–`` for none."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def render(
    cells: list[dict],
    methods: list[str],
    peers: list[str],
    few_shot: set[str] = frozenset(),
    few_peers: Sequence[str] = (),
) -> str:
    """The markdown tables: per category and mean, mean ± std over seeds, then cost, then
    adformer minus the best peer (few-shot methods: the best peer on the same k images)."""
    models = [m for m in [*methods, *peers, *few_peers] if any(c["model"] == m for c in cells)]
    categories = sorted({n for c in cells for n in c["per_category"]})
    seeds = sorted({c["seed"] for c in cells})

    def values(model, category, key):
        return seed_values(cells, model, category, key)

    lines = [f"seeds {', '.join(map(str, seeds))}; mean ± std over seeds", ""]
    lines += ["| category | model | " + " | ".join(HEADERS) + " |"]
    lines += ["|---|---|" + "---|" * len(HEADERS)]
    for category in [*categories, "mean"]:
        for model in models:
            stats = [mean_std(values(model, category, k)) for k in COLUMNS]
            lines.append(f"| {category} | {model} | " + " | ".join(stats) + " |")
    # validation columns only where a cell has them (cells written before them do not)
    checked = any(c.get("validation") for c in cells)
    labelled = any(labelled_of(c) is not None for c in cells)
    header = ["model", *(["validation I-AUROC", "validation P-AUROC"] if checked else [])]
    header += ["labelled validation I-AUROC"] if labelled else []
    header += ["fit s", "test images/s", "peak memory MB"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in models:
        own = [c for c in cells if c["model"] == model]
        row = [mean_std([validation_of(c, k) for c in own]) for k in VALIDATION]
        row = row if checked else []
        row += [mean_std([labelled_of(c) for c in own])] if labelled else []
        row += [mean_std([c[k] for c in own], 1) for k in COST]
        lines.append(f"| {model} | " + " | ".join(row) + " |")
    if checked:
        note = "validation: `fit`'s held-out good images against the same with synthetic defects"
        lines += ["", note + " (what configurations are chosen on; no test labels, no peers)"]
    if labelled:
        lines += [
            "labelled validation: the same held-out good images against labelled defects kept "
            "out of the test set and out of training (`--labelled-validation`)"
        ]
    ours = [m for m in methods if m in models]
    if ours and any(p in models for p in [*peers, *few_peers]):
        for key, name in (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC")):
            rows = []
            for category in [*categories, "mean"]:
                row = []
                for method in ours:
                    rivals = few_peers if method in few_shot else peers
                    best = [values(p, category, key) for p in rivals if p in models]
                    best = [np.mean(b) for b in best if b]
                    mine = values(method, category, key)
                    row.append(f"{np.mean(mine) - max(best):+.3f}" if mine and best else "–")
                rows.append(f"| {category} | " + " | ".join(row) + " |")
            if all(set(r.split("|", 2)[2]) <= set("–| ") for r in rows):
                continue  # e.g. no masks: no pixel AUROC
            lines += ["", f"adformer minus the best peer, {name} (mean over seeds):", ""]
            lines += ["| category | " + " | ".join(ours) + " |", "|---|" + "---|" * len(ours)]
            lines += rows
    return "\n".join(lines) + "\n"
