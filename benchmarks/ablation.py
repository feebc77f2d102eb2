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
test columns say whether that signal ranks configurations as the test does: for each
configuration, its difference from the preset per seed, on validation and on the test, and
at how many seeds the two have the same sign.

With ``--labelled-validation N`` (ELPV) N defective cells per category leave the test set
and every configuration is also scored on them against the same held-out good images (a
few-shot method: against each support image of the test's rounds held out in turn): the
validation of a user who has labelled some defects (never trained or adapted on), what the
choice is then made on; the synthetic signal's ranking is shown after it.

With ``--preset-cells DIR`` the preset's cells are not fitted again but taken from ``DIR``, an
earlier ablation's folder of the configuration that has since become the preset (its options
dropped): the grid's check then refuses any cell whose fitted configuration is not the one
the preset gives now, before anything runs (the refused cell, named, stays in
``OUT/preset/cells`` until removed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import add_grid_options, agreement, grid_options, machine, parse_config, run_peers

from adformer.benchmark import (
    VALIDATION,
    grid_cells,
    labelled_of,
    mean_std,
    run_benchmark,
    seed_values,
    validation_of,
)


def summary(out: Path, model: str, seeds) -> dict:
    """One model's grid at `seeds`: per key, one value per seed (validation and test AUROCs,
    fit s), and ``by_seed``: seed → (validation, test) mean image AUROC where a cell has both."""
    cells = grid_cells(out, [model], seeds)
    row = {f"validation_{k}": [validation_of(c, k) for c in cells] for k in VALIDATION}
    row |= {k: seed_values(cells, model, "mean", k) for k in ("image_auroc", "pixel_auroc")}
    row["labelled_image_auroc"] = [labelled_of(c) for c in cells]
    row["fit_s"] = [c["fit_s"] for c in cells]
    row = {k: [v for v in values if v is not None] for k, values in row.items()}
    row["by_seed"], row["by_seed_labelled"] = {}, {}
    for c in cells:
        test = seed_values([c], model, "mean", "image_auroc")
        for key, val in (
            ("by_seed", validation_of(c, "image_auroc")),
            ("by_seed_labelled", labelled_of(c)),
        ):
            if val is not None and test:
                row[key][c["seed"]] = (val, test[0])
    return row


def adopt_cells(source: Path, preset: Path, method: str) -> None:
    """`method`'s finished cells in `source` (an ablation's ``OUT/<name>``) copied into the
    folder of the preset's grid with no options, as if the preset had fitted them; a cell
    already there is kept."""
    cells = sorted((source / "cells").glob(f"{method}-seed*.json"))
    if not cells:
        raise SystemExit(f"--preset-cells {source}: no finished {method} cells in {source}/cells")
    (preset / "cells").mkdir(parents=True, exist_ok=True)
    for path in cells:
        target = preset / "cells" / path.name
        cell = json.loads(path.read_text())
        if not {"settings", "config"} <= cell.keys():
            raise SystemExit(f"{path} does not store its configuration: it cannot be checked")
        if not target.exists():
            cell["settings"]["options"] = {}
            target.write_text(json.dumps(cell, indent=2))


def table(rows: dict[str, dict], options: dict[str, dict]) -> str:
    labelled = any(r["labelled_image_auroc"] for r in rows.values())
    keys = ["validation_image_auroc", "validation_pixel_auroc"]
    keys += ["labelled_image_auroc"] if labelled else []
    keys += ["image_auroc", "pixel_auroc"]
    header = "| configuration | options | validation I-AUROC | validation P-AUROC |"
    header += " labelled validation I-AUROC |" if labelled else ""
    lines = [
        header + " test I-AUROC | test P-AUROC | fit s | seeds |",
        "|---" * (len(keys) + 4) + "|",
    ]
    for name, row in rows.items():
        cells = [mean_std(row[k]) for k in keys] + [
            mean_std(row["fit_s"], 0),
            str(len(row["fit_s"])),
        ]
        given = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in options.get(name, {}).items())
        given = given or "–"
        lines.append(f"| {name} | {given} | " + " | ".join(cells) + " |")
    ours = {n: r for n, r in rows.items() if n in options}
    # labelled defects, where the grid has them, are what a choice is made on; the synthetic
    # signal's agreement with the test follows
    signals = ["by_seed_labelled", "by_seed"] if labelled else ["by_seed"]
    for signal in signals:
        lines += _ranking(ours, rows["preset"], signal, labelled and signal == "by_seed")
    return "\n".join(lines) + "\n"


def _ranking(ours: dict, preset: dict, signal: str, second: bool) -> list[str]:
    """Which configuration the validation `signal` picks and which the test would, and each
    configuration's per-seed differences from the preset on both."""
    lines = []
    ranked = {n: {**r, "by_seed": r[signal]} for n, r in ours.items() if r[signal]}
    # ranked on the seeds every configuration has (the table's means may span more seeds)
    have = [set(r["by_seed"]) for r in ranked.values()]
    seeds = sorted(set.intersection(*have)) if have else []
    if len(ranked) >= 2 and seeds:
        val, test = (
            [np.mean([r["by_seed"][s][i] for s in seeds]) for r in ranked.values()] for i in (0, 1)
        )
        names = list(ranked)
        which = "The labelled validation" if signal == "by_seed_labelled" else "Validation"
        picks = "would pick" if second else "picks"
        base = {**preset, "by_seed": preset[signal]}
        lines += [
            "",
            f"{which} {picks} **{names[int(np.argmax(val))]}**, the test would pick "
            f"**{names[int(np.argmax(test))]}** (mean image AUROC over seeds "
            f"{', '.join(map(str, seeds))}, which every configuration has).",
            "",
            *(agreement(n, r, base) for n, r in ranked.items() if n != "preset"),
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_grid_options(parser)
    parser.add_argument("--config", action="append", default=[], metavar="NAME:KEY=VALUE,...")
    parser.add_argument("--preset-cells", type=Path, metavar="DIR")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.preset_cells:
        adopt_cells(args.preset_cells, args.out / "preset", args.method)

    configs = dict([("preset", {}), *(parse_config(c) for c in args.config)])
    rows = {}
    for name, options in configs.items():
        out = args.out / name
        run_benchmark(
            args.data, [args.method], out, preset=args.preset, **grid_options(args), **options
        )
        rows[name] = summary(out, args.method, args.seeds)
    peers = run_peers(args, args.out / "peers")
    rows |= {peer: summary(args.out / "peers", peer, args.seeds) for peer in peers}
    text = f"{args.method}, `{args.preset}` preset, `--data {args.data}`"
    text += f" (max {args.max_train} training images)" if args.max_train else ""
    text += f"; {machine()}\n\n" + table(rows, configs)
    (args.out / "ablation.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
