"""An ablation: configurations of one method beside the peers, each run as `adformer
benchmark` runs its grid (same split, weights and seeds; one process per cell), validation
beside test, and whether choosing on validation picks what the test would have picked.

    .venv/bin/python benchmarks/ablation.py --method uniad --data elpv --max-train 150 \\
        --seeds 0 1 2 --peers padim patchcore --out /tmp/ablation \\
        --config standardise:standardise_features=true \\
        --config stride8:feature_stride=8 \\
        --config both:standardise_features=true,feature_stride=8

The preset as it is always runs first (``preset``). Each configuration's grid is kept in
``OUT/<name>/`` and resumes like any benchmark; ``OUT/ablation.md`` is the table. Choices
are made on the validation columns (`fit`'s held-out good images vs synthetic defects); the
test columns say whether that signal ranks configurations as the test does (Kendall's τ of
the two rankings of mean image AUROC).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import machine
from scipy.stats import kendalltau

from adformer.benchmark import VALIDATION, run_benchmark, seed_values


def parse_config(text: str) -> tuple[str, dict]:
    """``NAME:KEY=VALUE,KEY=VALUE`` → (name, options); values are JSON where they parse."""
    name, _, assignments = text.partition(":")
    options = {}
    for item in filter(None, assignments.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--config {text}: expected KEY=VALUE, got '{item}'")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return name, options


def summary(out: Path, model: str) -> dict:
    """Mean over seeds of one model's grid: validation and test AUROCs, fit seconds."""
    cells = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    cells = [c for c in cells if c["model"] == model]
    checked = [c.get("validation") or {} for c in cells]
    row = {f"validation_{k}": [v.get(k) for v in checked] for k in VALIDATION}
    row |= {k: seed_values(cells, model, "mean", k) for k in ("image_auroc", "pixel_auroc")}
    row["fit_s"] = [c["fit_s"] for c in cells]
    return {k: _mean(v) for k, v in row.items()} | {"seeds": len(cells)}


def _mean(values: list) -> tuple[float, float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _cell(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    mean, std = value
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std else f"{mean:.{digits}f}"


def table(rows: dict[str, dict], options: dict[str, dict]) -> str:
    keys = ["validation_image_auroc", "validation_pixel_auroc", "image_auroc", "pixel_auroc"]
    lines = [
        "| configuration | options | validation I-AUROC | validation P-AUROC | test I-AUROC "
        "| test P-AUROC | fit s | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        cells = [_cell(row[k]) for k in keys] + [_cell(row["fit_s"], 0), str(row["seeds"])]
        given = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in options.get(name, {}).items())
        given = given or "–"
        lines.append(f"| {name} | {given} | " + " | ".join(cells) + " |")
    ours = {n: r for n, r in rows.items() if n in options}
    ranked = {n: r for n, r in ours.items() if r["validation_image_auroc"] and r["image_auroc"]}
    if len(ranked) >= 2:
        val = [r["validation_image_auroc"][0] for r in ranked.values()]
        test = [r["image_auroc"][0] for r in ranked.values()]
        tau = kendalltau(val, test).statistic
        names = list(ranked)
        lines += [
            "",
            f"Validation picks **{names[int(np.argmax(val))]}**, the test would pick "
            f"**{names[int(np.argmax(test))]}**; Kendall's τ of the two rankings: {tau:+.2f}.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--categories", nargs="+")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-train", type=int)
    parser.add_argument("--peers", nargs="*", default=[])
    parser.add_argument("--config", action="append", default=[], metavar="NAME:KEY=VALUE,...")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    configs = dict([("preset", {}), *(parse_config(c) for c in args.config)])
    common = {"categories": args.categories, "seeds": args.seeds, "max_train": args.max_train}
    rows = {}
    for name, options in configs.items():
        out = args.out / name
        run_benchmark(args.data, [args.method], out, preset=args.preset, **common, **options)
        rows[name] = summary(out, args.method)
    if args.peers:
        run_benchmark(args.data, [], args.out / "peers", peers=args.peers, **common)
    rows |= {peer: summary(args.out / "peers", peer) for peer in args.peers}
    text = f"{args.method}, `{args.preset}` preset, `--data {args.data}`"
    text += f" (max {args.max_train} training images)" if args.max_train else ""
    text += f"; {machine()}\n\n" + table(rows, configs)
    (args.out / "ablation.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
