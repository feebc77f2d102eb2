"""Runs: what `adformer fit` writes and `test`/`predict` read, as one Python object.

A run directory holds one bundle, or — for a method that learns one model per category
(``learning_type == "one_class"``) given several categories — one bundle per category in
``RUN/<category>/`` and an index, ``runs.json``. The CLI is a thin layer over this module.

>>> run = adformer.fit("adtr", "/data/mvtec", "runs/adtr", preset="cpu")  # doctest: +SKIP
>>> run.test("/data/mvtec").metrics["image_auroc"]  # doctest: +SKIP
>>> run.predict(["new_parts/"], "predictions", category="bottle")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from adformer.errors import AdformerError


@dataclass
class Run:
    """A fitted run: `bundles` maps each category to its bundle, or ``None`` to the single
    bundle of a run with one model."""

    directory: Path
    method: str
    bundles: dict[str | None, Path]
    _loaded: dict = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, directory: str | Path) -> Run:
        from adformer.deploy.bundle import read_run

        directory = Path(directory)
        method, found = read_run(directory)
        return cls(directory, method, found)

    @property
    def per_category(self) -> bool:
        return None not in self.bundles

    def detector(self, category: str | None = None, device=None):
        """The model of `category` (per-category runs), else the run's one model."""
        if not self.per_category:
            key = None
        elif category in self.bundles:
            key = category
        else:
            raise AdformerError(
                f"{self.directory} holds one model per category: choose one with --category "
                f"(category=...): {', '.join(self.bundles)}"
            )
        import torch

        detector = self._loaded.get(key)
        # on the device asked for (None: wherever it was fitted or loaded)
        if detector is None or (device is not None and detector.device_ != torch.device(device)):
            from adformer.deploy.bundle import load_bundle

            detector = self._loaded[key] = load_bundle(self.bundles[key], device)
        return detector

    def test(
        self,
        data,
        categories: Sequence[str] | None = None,
        *,
        report: str | Path | None = None,
        device=None,
        layout: str | None = None,
    ):
        """Evaluate on the test images of `data` (default: the categories each model was
        fitted on); with `report`, also write an HTML report there. Returns the
        `Evaluation` (``.metrics`` is the JSON of `adformer test`)."""
        from adformer.data import load_root
        from adformer.evaluation.evaluate import evaluate, merge

        evaluations, detectors = [], {}
        for category in self.bundles:
            if category is not None and categories and category not in categories:
                continue
            detector = self.detector(category, device)
            names = [category] if category is not None else categories
            names = names or detector.default_test_categories()
            evaluations.append(evaluate(detector, load_root(data, names, layout)))
            detectors.update(dict.fromkeys(evaluations[-1].metrics["per_category"], detector))
        if not evaluations:
            raise AdformerError(f"{self.directory} has no model for categories {categories}")
        merged = merge(evaluations)
        if report is not None:
            from adformer.evaluation.report import write_report

            write_report(report, merged, detectors)
        return merged

    def calibrate(
        self,
        data,
        out: str | Path,
        *,
        anomalies: str | Path | None = None,
        layout: str | None = None,
        device=None,
        **options,
    ) -> Run:
        """Each model's threshold and validation again, without training (`Detector.calibrate`),
        after changing options that change no training (its `scoring_options`), on the images
        its `fit` held out of `data` — with `anomalies`, also on labelled defects as `fit`
        takes them — written to `out` (this run's directory to replace it). Every model is
        calibrated before anything is written, so a refusal leaves `out` as it was.

        >>> run.calibrate("/data/mvtec", "runs/uniad-p48", score_pool=48)  # doctest: +SKIP
        """
        from adformer.data import load_root
        from adformer.data.folders import load_anomalies
        from adformer.deploy.bundle import save_runs_index

        detectors = {key: self.detector(key, device) for key in self.bundles}
        fitted_on = [name for d in detectors.values() for name in d.categories_]
        pools = load_anomalies(anomalies, fitted_on) if anomalies else {}
        for detector in detectors.values():
            found = load_root(data, detector.categories_, layout)
            for category in found:
                category.anomalies = pools.get(category.name, [])
            detector.calibrate(found, **options)
        out = Path(out)
        bundles = {key: out / key if key else out for key in detectors}
        for key, detector in detectors.items():
            detector.save(bundles[key])
        if self.per_category:
            save_runs_index(out, self.method, list(detectors))
        return Run(out, self.method, bundles, detectors)

    def predict(
        self,
        images: Sequence[str | Path],
        out: str | Path,
        *,
        category: str | None = None,
        device=None,
    ):
        """Score image files or folders and write ``scores.csv`` and overlays to `out`."""
        from adformer.evaluation.predictions import write_predictions

        return write_predictions(self.detector(category, device), images, out)


def fit(
    method: str,
    data,
    out: str | Path,
    *,
    categories: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    anomalies: str | Path | None = None,
    separate: bool | None = None,
    preset: str | None = None,
    layout: str | None = None,
    resume: bool = False,
    device=None,
    progress: bool = True,
    checkpoint_every: float | None = None,
    **options,
) -> Run:
    """Train `method` on the categories of `data` and write the run to `out`.

    - `categories`: default all; `exclude`: categories never trained on (a few-shot method's
      leave-one-out);
    - `layout`: ``mvtec`` (also MPDD), ``visa``, ``btad`` or ``folder``; detected if None;
    - `anomalies`: labelled defects, ``DIR/CAT/test/<defect>/`` with optional masks: a
      method with ``supports_anomalies`` (ADTR+) learns from most and validates on the rest
      (``anomaly_val_fraction``); the other one-class methods validate on them all (the
      threshold and ``validation_["labelled"]``), never trained on;
    - `separate`: one model per category; default for ``one_class`` methods when
      `categories` is not given;
    - `checkpoint_every`: seconds between the checkpoints `resume` reads (0: every epoch).

    >>> run = adformer.fit("uniad", "/data/mvtec", "runs/uniad", preset="cpu")  # doctest: +SKIP
    """
    import adformer
    from adformer import distributed
    from adformer.data import load_root
    from adformer.data.folders import load_anomalies
    from adformer.deploy.bundle import save_runs_index

    # options are validated before any data is read or any model trained
    adformer.create(method, preset, **options)
    found = load_root(data, categories, layout)
    if exclude:
        missing = sorted(set(exclude) - {c.name for c in found})
        if missing:
            raise AdformerError(f"exclude: {data} has no categories {missing}")
        found = [c for c in found if c.name not in exclude]
        if not found:
            raise AdformerError("exclude leaves no category to train on")
    if anomalies:
        pools = load_anomalies(anomalies, [c.name for c in found])
        for category in found:
            category.anomalies = pools.get(category.name, [])
    if separate is None and categories:  # named categories: one model over them
        separate = False
    groups = model_groups(method, found, separate)
    out = Path(out)
    bundles, fitted = {}, {}
    for group in groups:
        key = group[0].name if len(groups) > 1 else None
        target = out / key if key else out
        detector = adformer.create(method, preset, **options)
        detector.fit(
            group,
            run_dir=target,
            resume=resume,
            device=device,
            progress=progress,
            checkpoint_every=checkpoint_every,
        )
        if distributed.is_main():  # under torchrun the processes hold the same model
            detector.save(target)
        bundles[key], fitted[key] = target, detector
    if len(groups) > 1 and distributed.is_main():
        save_runs_index(out, method, [c.name for c in found])
    distributed.barrier()  # the run is on disk before any process goes on
    return Run(out, method, bundles, fitted)


def model_groups(method: str, categories: list, separate: bool | None = None) -> list[list]:
    """The categories each model is fitted on: one model per category if `separate` (default:
    for a ``one_class`` method), else one model for all of them."""
    from adformer.methods.registry import get

    if separate is None:
        separate = get(method).learning_type == "one_class"
    if separate and len(categories) > 1:
        return [[c] for c in categories]
    return [list(categories)]
