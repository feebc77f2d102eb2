"""Backbones: timm feature extractors and offline weight resolution."""

from adformer.backbones.extractor import FeatureExtractor, build_extractor
from adformer.backbones.weights import BackboneWeights, resolve_weights

__all__ = ["BackboneWeights", "FeatureExtractor", "build_extractor", "resolve_weights"]
