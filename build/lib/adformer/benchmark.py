"""`adformer benchmark`: methods (and anomalib's PaDiM and PatchCore as peers) over seeds on
one data set, same split, same weights, one run, in one table.

Every cell (model × seed) is fitted, tested and written to ``OUT/cells/<model>-seed<s>.json``
with its fit time, test images/s and peak memory; a rerun skips the cells already there, so
an interrupted grid resumes and a finished one re-renders ``results.csv`` and ``results.md``
in seconds. One-class methods fit one model per category, unified ones one model for all,
few-shot ones leave each category out in turn and are tested on it with k support images
(``shots``, ``rounds`` support sets).

>>> run_benchmark("elpv", ["uniad", "adtr"], "bench", seeds=[0, 1, 2], preset="cpu",
...               peers=["padim", "patchcore"])  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adformer.errors import AdformerError

COLUMNS = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max")
HEADERS = ("I-AUROC", "P-AUROC", "AUPRO", "F1-max")


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
    progress: bool = False,
    **options,
) -> Path:
    """Run (or resume) the grid and write ``results.csv`` and ``results.md`` in `out`;
    returns the path of ``results.md``."""
    import adformer
    from adformer.evaluation.peers import PEERS

    for method in methods:  # options are checked before anything runs
        adformer.create(method, preset, **options)
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        raise AdformerError(f"unknown peers {unknown}: choose from {', '.join(PEERS)}")
    out = Path(out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    settings = {"data": str(data), "preset": preset, "options": options, "shots": shots}
    for seed in seeds:
        found = _categories(data, categories, layout, seed)
        for model in [*methods, *peers]:
            path = out / "cells" / f"{model}-seed{seed}.json"
            if path.is_file():
                continue  # finished in an earlier run
            if model in PEERS:
                cell = _peer_cell(model, found, seed)
            else:
                cell = _method_cell(model, found, seed, preset, shots, rounds, progress, options)
            cell |= {"model": model, "seed": seed, "settings": settings}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(cell, indent=2))
            os.replace(tmp, path)
    cells = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    cells = [c for c in cells if c["model"] in [*methods, *peers] and c["seed"] in seeds]
    _write_csv(cells, out / "results.csv")
    (out / "results.md").write_text(render(cells, list(methods), list(peers)))
    return out / "results.md"


def _categories(data, categories, layout, seed):
    if str(data) == "elpv":  # its split is seeded
        from adformer.data.elpv import load_elpv

        return load_elpv(categories, seed=seed)
    from adformer.data import load_root

    return load_root(data, categories, layout)


def _method_cell(method, found, seed, preset, shots, rounds, progress, options) -> dict:
    import adformer
    from adformer.evaluation.evaluate import evaluate
    from adformer.evaluation.few_shot import evaluate_few_shot
    from adformer.runs import model_groups

    per_category, fit_s, test_s, images = {}, 0.0, 0.0, 0
    with PeakMemory() as memory:
        if adformer.create(method, preset, **options).learning_type == "few_shot":
            if len(found) < 2:
                raise AdformerError(f"{method} is tested leave-one-out: give 2+ categories")
            for category in found:
                detector = adformer.create(method, preset, seed=seed, **options)
                start = time.perf_counter()
                detector.fit([c for c in found if c is not category], progress=progress)
                fit_s += time.perf_counter() - start
                start = time.perf_counter()
                metrics = evaluate_few_shot(detector, [category], shots, rounds, seed)
                test_s += time.perf_counter() - start
                images += len(category.test) * (rounds or 1)
                per_category[category.name] = metrics["per_category"][category.name]
        else:
            for group in model_groups(method, found):
                detector = adformer.create(method, preset, seed=seed, **options)
                start = time.perf_counter()
                detector.fit(group, progress=progress)
                fit_s += time.perf_counter() - start
                start = time.perf_counter()
                per_category |= evaluate(detector, group).metrics["per_category"]
                test_s += time.perf_counter() - start
                images += sum(len(c.test) for c in group)
    return _cell(per_category, fit_s, images / max(test_s, 1e-9), memory.peak_mb)


def _peer_cell(name, found, seed) -> dict:
    from adformer.evaluation.evaluate import evaluate
    from adformer.evaluation.peers import Peer

    per_category, fit_s, test_s, images = {}, 0.0, 0.0, 0
    with PeakMemory() as memory:
        for category in found:  # one model per category, trained on all its good images
            start = time.perf_counter()
            peer = Peer(name, seed).fit(category.train)
            fit_s += time.perf_counter() - start
            start = time.perf_counter()
            per_category |= evaluate(peer, [category]).metrics["per_category"]
            test_s += time.perf_counter() - start
            images += len(category.test)
    return _cell(per_category, fit_s, images / max(test_s, 1e-9), memory.peak_mb)


def _cell(per_category: dict, fit_s: float, images_per_s: float, peak_mb) -> dict:
    keep = {name: {k: m.get(k) for k in COLUMNS} for name, m in per_category.items()}
    return {"per_category": keep, "fit_s": fit_s, "images_per_s": images_per_s, "peak_mb": peak_mb}


class PeakMemory:
    """Peak resident memory of this process while the block runs, in MB (Linux; None
    elsewhere), sampled every 50 ms; on a GPU, torch's peak allocation is added."""

    def __init__(self):
        self.peak_mb, self._stop = None, threading.Event()

    def _rss_mb(self) -> float | None:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:
            return None

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            rss = self._rss_mb()
            if rss is not None:
                self.peak_mb = max(self.peak_mb or 0.0, rss)

    def __enter__(self) -> PeakMemory:
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.peak_mb = self._rss_mb()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        self._stop.set()
        self._thread.join()
        if torch.cuda.is_available() and self.peak_mb is not None:
            self.peak_mb += torch.cuda.max_memory_allocated() / 2**20


def _write_csv(cells: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "seed", "category", *COLUMNS, "fit_s", "images_per_s", "peak_mb"])
        for c in cells:
            for name, m in c["per_category"].items():
                row = [c["model"], c["seed"], name, *(m.get(k) for k in COLUMNS)]
                writer.writerow([*row, c["fit_s"], c["images_per_s"], c["peak_mb"]])


def _stat(values: list, digits: int = 3) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def render(cells: list[dict], methods: list[str], peers: list[str]) -> str:
    """The markdown tables: per category and mean, mean ± std over seeds, then cost, then
    adformer minus the best peer."""
    models = [m for m in [*methods, *peers] if any(c["model"] == m for c in cells)]
    categories = sorted({n for c in cells for n in c["per_category"]})
    seeds = sorted({c["seed"] for c in cells})

    def values(model, category, key):
        out = []
        for c in cells:
            if c["model"] != model:
                continue
            if category == "mean":
                known = [m.get(key) for m in c["per_category"].values() if m.get(key) is not None]
                out.append(float(np.mean(known)) if known else None)
            else:
                out.append(c["per_category"].get(category, {}).get(key))
        return out

    lines = [f"seeds {', '.join(map(str, seeds))}; mean ± std over seeds", ""]
    lines += ["| category | model | " + " | ".join(HEADERS) + " |"]
    lines += ["|---|---|" + "---|" * len(HEADERS)]
    for category in [*categories, "mean"]:
        for model in models:
            stats = [_stat(values(model, category, k)) for k in COLUMNS]
            lines.append(f"| {category} | {model} | " + " | ".join(stats) + " |")
    lines += ["", "| model | fit s | test images/s | peak memory MB |", "|---|---|---|---|"]
    for model in models:
        own = [c for c in cells if c["model"] == model]
        cost = [_stat([c[k] for c in own], 1) for k in ("fit_s", "images_per_s", "peak_mb")]
        lines.append(f"| {model} | " + " | ".join(cost) + " |")
    if peers and any(m in methods for m in models):
        lines += ["", "adformer minus the best peer, image AUROC (mean over seeds):", ""]
        lines += ["| category | " + " | ".join(m for m in methods if m in models) + " |"]
        lines += ["|---|" + "---|" * sum(m in models for m in methods)]
        for category in [*categories, "mean"]:
            best = max(
                (
                    np.mean([v for v in values(p, category, "image_auroc") if v is not None] or [0])
                    for p in peers
                    if p in models
                ),
                default=None,
            )
            row = []
            for m in (m for m in methods if m in models):
                mine = [v for v in values(m, category, "image_auroc") if v is not None]
                row.append("–" if not mine or best is None else f"{np.mean(mine) - best:+.3f}")
            lines.append(f"| {category} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
