"""What `predict` and `serve` score with: an ONNX export through the torch-free runtime, or a
fitted run through PyTorch, behind one interface — ``method``, ``image_size``,
``categories`` and ``model(category)``, whose ``predict`` returns a `Prediction`.

>>> models = open_models("exports/uniad")  # doctest: +SKIP
>>> models.model("bottle").predict(["part.png"]).scores  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from adformer.errors import AdformerError

BACKENDS = ("auto", "onnx", "torch")


def open_models(
    source: str | Path, backend: str = "auto", device=None, threshold: float | None = None
):
    """An export (``backend`` auto or onnx) as `adformer.runtime.Runtime`, a run (auto or
    torch) as `TorchModels`; `threshold` replaces the fitted one."""
    from adformer.runtime import is_export

    if backend not in BACKENDS:
        raise AdformerError(f"unknown backend '{backend}': choose from {', '.join(BACKENDS)}")
    if is_export(source):
        if backend == "torch":
            raise AdformerError(
                f"{source} is an ONNX export: use the onnx backend, or give the run it was "
                "exported from"
            )
        from adformer.runtime import load

        return load(source, threshold=threshold)
    if backend == "onnx":
        raise AdformerError(
            f"{source} is a PyTorch run: export it first (adformer export {source} --out "
            "EXPORT) and give EXPORT"
        )
    from adformer.runs import Run

    return TorchModels(Run.open(source), device, threshold)


class TorchModels:
    """A fitted run with the runtime's interface; detectors are loaded on first use."""

    backend = "torch"

    def __init__(self, run, device=None, threshold: float | None = None):
        self.run, self.device, self.threshold = run, device, threshold
        self.directory = run.directory
        first = self._detector(next(iter(run.bundles)))
        self.method: str = first.name
        self.image_size: int = first.config.image_size
        self._categories = {
            key: (self._detector(key).default_test_categories() if key is None else [key])
            for key in run.bundles
        }

    @property
    def categories(self) -> list[str]:
        return [c for names in self._categories.values() for c in names]

    def _detector(self, key):
        detector = self.run.detector(key, self.device)
        if self.threshold is not None:
            detector.threshold_, detector.threshold_source_ = self.threshold, "set at load"
        return detector

    def model(self, category: str | None = None):
        return self._detector(choose_model(self.directory, self._categories, category))


def choose_model(directory, groups: dict, category: str | None):
    """The key in `groups` (key → the categories its model scores) of the model for
    `category`; with one model, `None` picks it."""
    if category is None:
        if len(groups) == 1:
            return next(iter(groups))
        raise AdformerError(
            f"{directory} holds one model per category: choose one with category "
            f"({', '.join(c for names in groups.values() for c in names)})"
        )
    for key, names in groups.items():
        if category in names:
            return key
    raise AdformerError(
        f"{directory} has no model for category '{category}': "
        f"{', '.join(c for names in groups.values() for c in names)}"
    )
