"""The methods, each a registered detector: ``adformer.methods.available()``."""

from adformer.methods.registry import available, create, get, register

__all__ = ["available", "create", "get", "register"]
