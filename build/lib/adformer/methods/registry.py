"""Method registry: one name → one detector class, discovered from the modules in `methods/`.

Adding a method means adding a module that decorates its class with `@register("name")`.
"""

from __future__ import annotations

import importlib
import pkgutil

from adformer.errors import AdformerError

_REGISTRY: dict[str, type] = {}


def register(name: str):
    def decorate(cls: type) -> type:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _discover() -> None:
    import adformer.methods as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


def available() -> list[str]:
    """Names of the registered methods.

    >>> import adformer
    >>> "uniad" in adformer.methods.available()
    True
    """
    _discover()
    return sorted(_REGISTRY)


def get(name: str) -> type:
    _discover()
    if name not in _REGISTRY:
        raise AdformerError(f"unknown method '{name}': choose from {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create(method: str, preset: str | None = None, **options):
    """A new, unfitted detector: the paper's configuration, a named preset, then `options`.

    >>> import adformer
    >>> detector = adformer.create("uniad", preset="cpu", epochs=2)
    >>> detector.config.backbone
    'tf_efficientnet_lite0'
    """
    return get(method).from_options(preset, **options)
