"""UniAD (seeds/004): one model for all categories. Layer-wise query decoder, neighbour-masked
attention and feature jitter over frozen EfficientNet stages 1–4."""

from __future__ import annotations

from adformer.methods.feature_reconstruction import FeatureReconstruction
from adformer.methods.registry import register

CPU_PRESET = {
    # Sized so a 300-image category trains in about ten minutes on 2 CPU cores
    # (docs/benchmarks.md); same architecture, narrower and shallower, fewer epochs.
    "backbone": "tf_efficientnet_lite0",
    "hidden_dim": 128,
    "ffn_dim": 512,
    "heads": 4,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "epochs": 150,
    "lr": 5e-4,
    "lr_milestones": (120,),
    "batch_size": 32,
}


@register("uniad")
class UniAD(FeatureReconstruction):
    """UniAD: `adformer.create("uniad", preset="cpu")`; defaults are the paper's."""

    presets = {"paper": {}, "cpu": CPU_PRESET}
