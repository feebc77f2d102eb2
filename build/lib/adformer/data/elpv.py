"""ELPV solar cells (PyPI ``elpv-dataset``, CC BY-NC-SA 4.0), the embedded real-defect data.

Labels are a defect probability in {0, 1/3, 2/3, 1} given by experts. We use:
good = probability 0; defective = probability >= 2/3. The 1/3 cells ("probably fine,
uncertain") are left out of both train and test, since either label would be a guess.
Categories are the cell types ``mono`` and ``poly``. ELPV has no pixel masks.

The good cells of each category are split (seeded) into train and test; defective cells are
test-only unless ``anomaly_pool`` moves some of them into a labelled training pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adformer.data.types import CategoryData, Sample
from adformer.errors import AdformerError

CATEGORIES = ("mono", "poly")
TEST_GOOD_FRACTION = 0.25


def _labels() -> tuple[Path, list[tuple[str, float, str]]]:
    try:
        import elpv_dataset
    except ImportError as error:
        raise AdformerError("the ELPV data needs the package: pip install elpv-dataset") from error
    folder = Path(elpv_dataset.__file__).parent / "data"
    rows = []
    for line in (folder / "labels.csv").read_text().splitlines():
        if line.strip():
            path, probability, kind = line.split()
            rows.append((path, float(probability), kind))
    return folder, rows


def load_elpv(
    categories: Sequence[str] | None = None,
    seed: int = 0,
    test_good_fraction: float = TEST_GOOD_FRACTION,
    max_train: int | None = None,
    max_test: int | None = None,
    anomaly_pool: int = 0,
) -> list[CategoryData]:
    """The ELPV categories as `CategoryData`, good cells split into train/test by `seed`.

    `max_train` and `max_test` cap the images per category (seeded subsets, the test subset
    half good, half defective) for quick runs. `anomaly_pool` moves that many defective cells
    per category (seeded) out of the test set into `CategoryData.anomalies`, the labelled
    defects ADTR+ may train on; they never appear in the test set.
    """
    if not categories or list(categories) == ["all"]:
        categories = list(CATEGORIES)
    unknown = sorted(set(categories) - set(CATEGORIES))
    if unknown:
        raise AdformerError(f"ELPV has categories {list(CATEGORIES)}, not {unknown}")
    folder, rows = _labels()
    result = []
    for name in categories:
        good = [folder / p for p, prob, kind in rows if kind == name and prob == 0.0]
        bad = [folder / p for p, prob, kind in rows if kind == name and prob >= 2 / 3 - 1e-6]
        order = np.random.default_rng(seed).permutation(len(good))
        n_test = int(round(len(good) * test_good_fraction))
        test_good = [good[i] for i in sorted(order[:n_test])]
        train_index = order[n_test:] if max_train is None else order[n_test : n_test + max_train]
        train = [good[i] for i in sorted(train_index)]
        if not 0 <= anomaly_pool < len(bad):
            raise AdformerError(
                f"anomaly_pool must be between 0 and {len(bad) - 1} for ELPV {name}, "
                f"got {anomaly_pool}"
            )
        pooled = set(np.random.default_rng([seed, 7]).permutation(len(bad))[:anomaly_pool])
        anomalies = [bad[i] for i in sorted(pooled)]
        bad = [p for i, p in enumerate(bad) if i not in pooled]
        if max_test is not None:
            rng = np.random.default_rng(seed + 1)
            n_good = min(len(test_good), max_test // 2)
            test_good = [test_good[i] for i in sorted(rng.permutation(len(test_good))[:n_good])]
            bad = [bad[i] for i in sorted(rng.permutation(len(bad))[: max_test - n_good])]
        result.append(
            CategoryData(
                name,
                train=[Sample(p, name) for p in train],
                test=[Sample(p, name, 0, "good") for p in test_good]
                + [Sample(p, name, 1, "defect") for p in bad],
                has_masks=False,
                anomalies=[Sample(p, name, 1, "defect") for p in anomalies],
            )
        )
    return result
