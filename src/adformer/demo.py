"""`adformer demo`: fully offline. One unified UniAD model (`cpu` preset) on the embedded ELPV
solar cells (mono + poly), evaluated on held-out good cells and real defects."""

from __future__ import annotations

import json
import time
from pathlib import Path

from adformer.data.elpv import load_elpv
from adformer.data.images import write_png
from adformer.evaluation.evaluate import evaluate, table
from adformer.evaluation.report import example_image

EXAMPLES = 4  # per kind in the grid
# Training cells per category: 2 x 150 keeps the demo under ten minutes on 2 CPU cores with
# bf16 instructions (22 min on 2 AVX2-only cores, in fp32: docs/benchmarks.md); every
# held-out good cell and every defective cell is tested.
TRAIN_PER_CATEGORY = 150


def run_demo(
    out: Path,
    device: str | None = None,
    seed: int = 0,
    max_train: int | None = TRAIN_PER_CATEGORY,
    max_test: int | None = None,
    **options,
) -> dict:
    """Train, evaluate, write metrics.json and examples.png into `out`; return the metrics."""
    import adformer

    out.mkdir(parents=True, exist_ok=True)
    categories = load_elpv(["mono", "poly"], seed=seed, max_train=max_train, max_test=max_test)
    n_train = sum(len(c.train) for c in categories)
    n_test = sum(len(c.test) for c in categories)
    print(f"ELPV: {n_train} good training cells, {n_test} test cells (mono + poly, unified)")
    start = time.time()
    detector = adformer.create("uniad", preset="cpu", seed=seed, **options)
    detector.fit(categories, run_dir=out / "run", device=device)
    detector.save(out / "run")
    print(f"trained in {time.time() - start:.0f} s; bundle in {out / 'run'}")

    evaluation = evaluate(detector, categories)
    (out / "metrics.json").write_text(json.dumps(evaluation.metrics, indent=2))

    write_png(example_image(detector, evaluation.records, EXAMPLES), out / "examples.png")
    print()
    print(table(evaluation.metrics))
    print(f"\nmetrics: {out / 'metrics.json'}; best/worst examples: {out / 'examples.png'}")
    return evaluation.metrics
