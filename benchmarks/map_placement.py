"""Where `fit`'s synthetic defects fall — on the part or on a plain background around it — and
how the validation ranks a method's two maps there: the paper's, and the one normalised at each
pixel over the training images (`normalise_map`: ADTR's z-score, InTra's division by the
variance), beside the test. Both maps come from one fit with `normalise_map=True` (the option
changes no training): the paper's is the normalised one mapped back with the fitted statistics.

The part is told from its background per held-out image as `validation_defects="part"` tells it
(`evaluation.validation.on_part`: a pixel is background when its colour is within
``--tolerance`` of the median colour of the image's border), and a defect lies on the part when
at least half its mask does. Meant for objects on a plain background (hazelnut_toy); on a
part that fills the frame nearly every defect is on it.

    .venv/bin/python benchmarks/map_placement.py --method adtr --data ../shared/data \\
        --categories hazelnut_toy --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from common import add_run_options, apply_run_options, machine
from intra_map import mean_or_dash, outputs_on_test
from PIL import Image

import adformer
from adformer.benchmark import load_categories
from adformer.data.images import read_image
from adformer.evaluation.metrics import auroc
from adformer.evaluation.validation import (
    BACKGROUND_TOLERANCE,
    mostly_on,
    on_part,
    synthetic_outputs,
)
from adformer.tiling import pooled_max


def part_of(path, size: int, tolerance: float) -> np.ndarray:
    """`on_part` of the image at `path`, resized as `fit` validates it."""
    return on_part(np.asarray(read_image(path).resize((size, size), Image.BILINEAR)), tolerance)


def paper_map(detector, maps: np.ndarray) -> np.ndarray:
    """The paper's map from the normalised one the detector predicts (inverting its
    `normalise_map`)."""
    stats = detector.stats_
    if hasattr(stats, "map_var"):  # InTra: divided by the variance
        return maps * stats.map_var.cpu().numpy()
    return maps * stats.map_std.cpu().numpy() + stats.map_mean.cpu().numpy()  # a z-score


def metrics(labels, maps, truth, keep, pool: int) -> list[float | None]:
    """Image and pixel AUROC of the good images against the defective ones in `keep`."""
    if not keep.any():
        return [None, None]
    chosen = (labels == 0) | keep
    scores = np.array([pooled_max(m, pool) for m in maps[chosen]])
    return [auroc(labels[chosen], scores), auroc(truth[chosen].ravel(), maps[chosen].ravel())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=["adtr", "intra"], default="adtr")
    parser.add_argument("--data", required=True, help="a data root, or elpv")
    parser.add_argument("--categories", nargs="*")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max-train", type=int)
    parser.add_argument("--tolerance", type=float, default=BACKGROUND_TOLERANCE)
    add_run_options(parser)
    args = parser.parse_args()
    options = {**apply_run_options(args), "normalise_map": True}
    print(f"machine: {machine()}; {args.method} cpu {options}", flush=True)
    rows = []
    for seed in args.seeds:
        for category in load_categories(args.data, args.categories, None, seed, args.max_train):
            start = time.perf_counter()
            detector = adformer.create(args.method, "cpu", seed=seed, **options)
            detector.fit([category], progress=False)
            fit = time.perf_counter() - start
            size, pool = detector.config.image_size, detector.score_pool
            held_out = detector._split([category]).val  # what `fit` held out
            labels, _, truth, maps = synthetic_outputs(detector, held_out, seed)
            parts = np.stack([part_of(s.path, size, args.tolerance) for s in held_out])
            n = len(held_out)  # the defective copies follow the good images, variant by variant
            on = [mostly_on(m, parts[k % n]) for k, m in enumerate(truth[n:])]
            part = np.r_[np.zeros(n, bool), on]
            test_labels, test_maps, test_masks = outputs_on_test(detector, category)
            row = {
                "category": category.name,
                "seed": seed,
                "fit_s": round(fit),
                "defects_on_part": int(part.sum()),
                "defects": int(labels.sum()),
            }
            for name, val, test in (
                ("normalised", maps, test_maps),
                ("paper", paper_map(detector, maps), paper_map(detector, test_maps)),
            ):
                for where, keep in (
                    ("all", labels == 1),
                    ("part", part),
                    ("background", (labels == 1) & ~part),
                ):
                    row[f"{name} {where}"] = metrics(labels, val, truth, keep, pool)
                scores = np.array([pooled_max(m, pool) for m in test])
                row[f"{name} test"] = [
                    auroc(test_labels, scores),
                    None if test_masks is None else auroc(test_masks.ravel(), test.ravel()),
                ]
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nmean over {len(rows)} fits (category × seed)")
    print("\n| map | scored on | I-AUROC | P-AUROC |\n|---|---|---|---|")
    for key in (k for k in rows[0] if k.startswith(("normalised ", "paper "))):
        name, where = key.split(" ")
        on = "the test" if where == "test" else f"validation, defects: {where}"
        means = [mean_or_dash([row[key][i] for row in rows]) for i in (0, 1)]
        print(f"| {name} | {on} | {' | '.join(means)} |")
    on = sum(r["defects_on_part"] for r in rows)
    print(f"\ndefects on the part: {on} of {sum(r['defects'] for r in rows)}")


if __name__ == "__main__":
    main()
