"""The few-shot protocol (RegAD, arXiv:2207.07361 §4.1): a model trained on other categories
is adapted to a new one from k good images, without retraining.

`support_sets` is the one place support images are drawn: `adformer adapt --seed S` adapts on
round 0 of it and `adformer test --shots K --rounds R --seed S` evaluates rounds 0…R−1, so an
adapted model can always be checked against the test protocol.

`training_validation` is a few-shot fit's validation signal (`fit` keeps it as
``validation_``): the adapt-and-score pipeline run on the categories it was trained on.
`support_validation` is one on a new category, from its support images alone.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adformer.data.folders import GOOD, load_anomalies, load_root
from adformer.data.images import list_images
from adformer.data.types import CategoryData, Sample
from adformer.errors import AdformerError
from adformer.evaluation.evaluate import average, evaluate, merge, with_means
from adformer.evaluation.validation import (
    labelled_metrics,
    synthetic_outputs,
    validation_metrics,
)


def support_sets(
    good: Sequence[Sample], shots: int, rounds: int = 1, seed: int = 0
) -> list[tuple[list[Sample], list[Sample]]]:
    """`rounds` seeded support sets of `shots` images, each with the other good images (in
    drawn order, e.g. to calibrate a threshold on). Round r is the first `shots` of the r-th
    permutation drawn from ``default_rng([seed, shots])``.

    >>> good = [Sample(Path(f"{i}.png"), "new") for i in range(6)]
    >>> [s.path.name for s in support_sets(good, 2, seed=0)[0][0]]
    ['5.png', '2.png']
    """
    if shots < 1:
        raise AdformerError(f"shots must be >= 1, got {shots}")
    if len(good) < shots:
        category = good[0].category if good else "the category"
        raise AdformerError(f"{category} has {len(good)} good images, fewer than {shots} shots")
    rng = np.random.default_rng([seed, shots])
    sets = []
    for _ in range(rounds):
        order = rng.permutation(len(good))
        sets.append(([good[i] for i in order[:shots]], [good[i] for i in order[shots:]]))
    return sets


def training_validation(
    detector, train: Sequence[Sample], val: Sequence[Sample], seed: int = 0
) -> dict | None:
    """What a few-shot fit chooses on, without test labels and without any image of a
    category it will be adapted to later: on each training category, a copy of `detector` is
    adapted to round 0 of `support_sets` over the images it trained on (``config.shots`` of
    them) and scored on the category's held-out good images against synthetic defects painted
    on them (`synthetic_validation`, as `adapt` does). The mean over categories, and each one's
    under ``per_category``; None when no category has 2 held-out images.

    Optimistic beside a new category (the registration network trained on these categories,
    though not on the held-out images), so it ranks configurations; it does not predict the
    test. The detector itself stays unadapted."""
    shots, per_category = detector.config.shots, {}
    for name in sorted({s.category for s in val}):
        good = [s for s in train if s.category == name]
        normals = [s for s in val if s.category == name]
        if len(good) < shots or len(normals) < 2:
            continue
        probe = copy.copy(detector)  # shares the trained network; adapting sets its own state
        probe.adapt(support_sets(good, shots, 1, seed)[0][0], normals, name)
        per_category[name] = probe.validation_
    return with_means({"shots": shots, "per_category": per_category}) if per_category else None


def support_validation(
    detector,
    support: Sequence[Sample],
    category: str = "adapted",
    seed: int = 0,
    defects: Sequence[Sample] = (),
) -> dict | None:
    """A validation signal on the new category itself, from its k support images alone (no
    other image of it, no test label): each support image is held out in turn, a copy of
    `detector` adapted to the other k − 1 and scored on it and on `VARIANTS` copies of it with a
    synthetic defect (`synthetic_outputs`); the k folds' scores are pooled into one set of
    metrics. None for k < 2. What `adapt`-time options (`scoring_options`) can be chosen on
    for a category never trained on; pessimistic by one shot (k − 1 in each fold), and
    ranking configurations, not predicting the test. The detector itself stays as it was.

    `defects`, labelled defective images of the category (never adapted on), are scored by
    each fold's copy too, against the image it held out: ``["labelled"]`` (`labelled_metrics`,
    pooled over the folds), the signal to choose on when the user has some."""
    if len(support) < 2:
        return None
    folds, held_out, bad = [], [], []
    for i, held in enumerate(support):
        probe = copy.copy(detector)  # shares the trained network; adapting sets its own state
        probe.adapt([s for j, s in enumerate(support) if j != i], (), category)
        labels, scores, truth, maps = synthetic_outputs(probe, [held], seed + i)
        folds.append((labels, scores, truth, maps))
        held_out.append((scores[labels == 0], maps[labels == 0]))  # the held-out image's
        bad += probe.score_samples(defects, skip_unreadable=False) if defects else []
    metrics = validation_metrics(folds) | {"folds": len(support)}
    if bad:
        pooled = tuple(np.concatenate(part) for part in zip(*held_out, strict=True))
        # each defect is scored once per fold; counted once
        metrics["labelled"] = labelled_metrics(pooled, bad) | {"n_defect": len(defects)}
    return metrics


def round_validations(
    detector, category: CategoryData, shots: int, rounds: int, seed: int
) -> list[dict]:
    """`support_validation` of each of the test protocol's `rounds` support sets of
    `category` (the sets `evaluate_few_shot` adapts on, same seed), with its labelled defects
    (``category.anomalies``) where it has some."""
    sets = support_sets(category.train, shots, rounds, seed)
    return [
        support_validation(detector, support, category.name, seed, category.anomalies)
        for support, _ in sets
    ]


def good_images(data, category: str | None = None) -> tuple[str, list[Sample]]:
    """The good images of a product and its name: ``train/good`` of `category` in a data
    root, a category folder, or any folder (or list) of good images."""
    if category is not None or (Path(str(data)) / "train" / GOOD).is_dir() or data == "elpv":
        (found,) = load_root(data, [category] if category else None)
        return found.name, found.train
    if isinstance(data, (str, Path)):
        name, inputs = Path(data).name, [data]
    else:
        name, inputs = "adapted", list(data)
    return name, [Sample(p, name) for p in list_images(inputs)]


def labelled_defects(anomalies: str | Path, name: str) -> list[Sample]:
    """A new product's labelled defects: ``DIR/<name>/test/<defect>/`` as `fit` takes them
    (masks optional, ``DIR/<name>/ground_truth/``), or any folder of defective images (searched
    recursively; no masks), the counterpart of a folder of good images."""
    root = Path(anomalies)
    if not root.is_dir():
        raise AdformerError(f"anomaly folder not found: {root}")
    if any((p / "test").is_dir() for p in root.iterdir()):
        return load_anomalies(root, [name])[name]
    found = list_images([root])
    if not found:
        raise AdformerError(f"no defect images in {root}")
    return [Sample(p, name, label=1, defect="labelled") for p in found]


def _require_few_shot(detector) -> None:
    if detector.learning_type != "few_shot":
        raise AdformerError(
            f"{detector.name} is not a few-shot method; adapting and --shots are for "
            "few-shot methods (regad)"
        )


def adapt(
    detector,
    data,
    shots: int,
    *,
    category: str | None = None,
    seed: int = 0,
    anomalies: str | Path | None = None,
):
    """Adapt a few-shot detector to a new product: round 0 of `support_sets` is the support
    set; up to ``val_max`` of the other good images set the threshold and ``validation_``
    (without any, the support images' own scores set the threshold, which is optimistic and
    said so, and `support_validation` the validation). `anomalies`: labelled defects of the
    product (`labelled_defects`), never adapted on: scored against the other good images (the
    threshold then F1-optimal), or against each support image held out, under
    ``validation_["labelled"]``.

    >>> adapted = adapt(adformer.load("runs/regad"), "new_good/", shots=4)  # doctest: +SKIP
    """
    _require_few_shot(detector)
    name, good = good_images(data, category)
    defects = labelled_defects(anomalies, name) if anomalies else []
    support, others = support_sets(good, shots, 1, seed)[0]
    detector.adapt(support, others[: detector.config.val_max], name, defects if others else ())
    if not others:
        detector.validation_ = support_validation(detector, support, name, seed, defects)
    return detector


def evaluate_few_shot(
    detector,
    categories: Sequence[CategoryData],
    shots: int,
    rounds: int | None = None,
    seed: int = 0,
) -> dict:
    """Metrics averaged over `rounds` support sets per category (``*_std``: the spread over
    rounds); the support images of every round are listed under ``support_sets``.

    No threshold is calibrated per round: the metrics are threshold-free.
    """
    _require_few_shot(detector)
    rounds = rounds or detector.config.rounds
    per_category, chosen = [], {}
    for category in categories:
        evaluations, chosen[category.name] = [], []
        for support, _ in support_sets(category.train, shots, rounds, seed):
            detector.adapt(support, (), category.name)
            evaluations.append(evaluate(detector, [category]))
            chosen[category.name].append([str(s.path) for s in support])
        per_category.append(evaluations)
    metrics = average([merge(list(round_)) for round_ in zip(*per_category, strict=True)])
    return metrics | {
        "shots": shots,
        "rounds": rounds,
        "support_seed": seed,
        "support_sets": chosen,
    }
