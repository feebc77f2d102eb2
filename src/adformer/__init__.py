"""adformer: transformer methods for visual anomaly detection behind one API.

>>> import adformer
>>> detector = adformer.create("uniad", preset="cpu").fit("data/mvtec")  # doctest: +SKIP
>>> result = detector.predict(["part.png"])  # doctest: +SKIP
>>> detector.save("runs/uniad"); same = adformer.load("runs/uniad")  # doctest: +SKIP
"""

from __future__ import annotations

from adformer.errors import AdformerError

__version__ = "0.1.0"


def create(method: str, preset: str | None = None, **options):
    """A new detector by method name; see `adformer.methods.available()`."""
    from adformer.methods.registry import create as _create

    return _create(method, preset, **options)


def load(directory, device=None):
    """A fitted detector from a bundle written by `save()` or `adformer fit`."""
    from adformer.deploy.bundle import load_bundle

    return load_bundle(directory, device)


def __getattr__(name: str):
    if name == "methods":  # lazily, so `import adformer` stays light
        import adformer.methods

        return adformer.methods
    raise AttributeError(name)


__all__ = ["AdformerError", "__version__", "create", "load"]
