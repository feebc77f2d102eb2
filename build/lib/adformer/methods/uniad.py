"""UniAD, "A Unified Model for Multi-class Anomaly Detection" (arXiv:2206.03687): one model for all
categories. Layer-wise query decoder, neighbour-masked
attention and feature jitter over frozen EfficientNet stages 1–4."""

from __future__ import annotations

from adformer.methods.feature_reconstruction import (
    CPU_SHRINK,
    TINY_SHRINK,
    FeatureReconstruction,
)
from adformer.methods.registry import register


@register("uniad")
class UniAD(FeatureReconstruction):
    """UniAD: `adformer.create("uniad", preset="cpu")`; defaults are the paper's."""

    learning_type = "unified"
    presets = {"paper": {}, "cpu": CPU_SHRINK, "tiny": {**TINY_SHRINK, "neighbour_size": 3}}
