"""adformer: transformer methods for visual anomaly detection behind one API.

>>> import adformer
>>> detector = adformer.create("uniad", preset="cpu").fit("data/mvtec")  # doctest: +SKIP
>>> result = detector.predict(["part.png"])  # doctest: +SKIP
>>> detector.save("runs/uniad"); same = adformer.load("runs/uniad")  # doctest: +SKIP
>>> run = adformer.fit("adtr", "data/mvtec", "runs/adtr", preset="cpu")  # doctest: +SKIP
"""

from __future__ import annotations

from adformer.errors import AdformerError

__version__ = "0.1.0"


def create(method: str, preset: str | None = None, **options):
    """A new, validated detector by method name; see `adformer.methods.available()`."""
    from adformer.methods.registry import create as _create

    return _create(method, preset, **options)


def load(directory, device=None, category: str | None = None):
    """A fitted detector from a bundle written by `save()` or `adformer fit`; for a run with
    one model per category, the model of `category`."""
    from adformer.runs import Run

    return Run.open(directory).detector(category, device)


def fit(method: str, data, out, **kwargs):
    """Train and save a run as `adformer fit` does (one model per category for one-class
    methods); returns a `Run`. See `adformer.runs.fit` for the options."""
    from adformer.runs import fit as _fit

    return _fit(method, data, out, **kwargs)


def __getattr__(name: str):
    # lazily, so `import adformer` stays light (no torch)
    if name == "methods":
        import adformer.methods

        return adformer.methods
    if name == "Run":
        from adformer.runs import Run

        return Run
    raise AttributeError(name)


__all__ = ["AdformerError", "Run", "__version__", "create", "fit", "load"]
