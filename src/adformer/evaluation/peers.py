"""anomalib's PaDiM and PatchCore as peers in a benchmark (``pip install "adformer[peers]"``;
never a runtime dependency), with the same EfficientNet-Lite0 ImageNet weights as adformer's
`cpu` presets, driven directly (no Lightning) and evaluated by adformer's own evaluator.

PaDiM uses the stride 4/8/16 stages (100 random channels of 176, as PaDiM's ResNet-18 default
keeps 100), PatchCore the stride 8/16 stages with a 1 % coreset, both at 256 px. Trained on a
few-shot method's k support images, PatchCore keeps every patch (``coreset=1``): a coreset of a
few images' patches would only throw away what few-shot PatchCore has.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import SimpleNamespace

import torch

from adformer.data.dataset import loader
from adformer.data.types import Sample
from adformer.errors import AdformerError
from adformer.methods.base import ScoredBatch

PEERS = ("padim", "patchcore")
SIZE = 256
LITE0 = "tf_efficientnet_lite0"
LAYERS = {"padim": ["blocks.1", "blocks.2", "blocks.4"], "patchcore": ["blocks.2", "blocks.4"]}
PADIM_CHANNELS = 100


class Peer:
    """A peer with the part of the detector protocol that `evaluate` uses."""

    def __init__(self, name: str, seed: int = 0, coreset: float = 0.01):
        if name not in PEERS:
            raise AdformerError(f"unknown peer '{name}': choose from {', '.join(PEERS)}")
        if not 0 < coreset <= 1:
            raise AdformerError(f"coreset={coreset}: the fraction of patches kept, in (0, 1]")
        self.name, self.seed, self.coreset = name, seed, coreset
        self.config = SimpleNamespace(seed=seed, image_size=SIZE)
        self.threshold_, self.categories_ = None, None
        self.model = None

    @property
    def settings(self) -> dict:
        """What the peer is fitted with, as a benchmark cell stores it (JSON's own types), so
        that a finished cell is reused only by a grid that would fit the same."""
        own = {"channels": PADIM_CHANNELS} if self.name == "padim" else {"coreset": self.coreset}
        return {"backbone": LITE0, "image_size": SIZE, "layers": LAYERS[self.name], **own}

    def _build(self):
        try:
            from anomalib.models.image.padim.torch_model import PadimModel
            from anomalib.models.image.patchcore.torch_model import PatchcoreModel
        except ImportError as error:
            raise AdformerError("the peers need anomalib: pip install 'adformer[peers]'") from error
        from adformer.backbones.weights import resolve_weights

        torch.manual_seed(self.seed)  # PaDiM's channel subset, PatchCore's coreset start
        layers = LAYERS[self.name]
        if self.name == "padim":
            model = PadimModel(LITE0, layers, pre_trained=False, n_features=PADIM_CHANNELS)
        else:
            model = PatchcoreModel(layers=layers, backbone=LITE0, pre_trained=False)
        features = model.feature_extractor.feature_extractor
        weights = resolve_weights(LITE0).state_dict
        own = [k for k in features.state_dict() if not k.endswith("num_batches_tracked")]
        features.load_state_dict({k: weights[k] for k in own}, strict=False)
        return model

    @torch.no_grad()
    def fit(self, samples: Sequence[Sample]) -> Peer:
        self.model = self._build()
        self.model.train()
        self.model.feature_extractor.eval()
        for batch in loader(list(samples), SIZE, 16):
            self.model(_normalised(batch.images))
        if self.name == "padim":
            self.model.fit()
        elif self.coreset < 1:
            self.model.subsample_embedding(self.coreset)
        else:  # every patch of every training image
            self.model.memory_bank = torch.vstack(self.model.embedding_store)
            self.model.embedding_store.clear()
        self.categories_ = sorted({s.category for s in samples})
        return self

    @torch.no_grad()
    def score_samples(self, samples, *, skip_unreadable: bool = True) -> Iterator[ScoredBatch]:
        self.model.eval()
        for batch in loader(list(samples), SIZE, 16, skip_unreadable=skip_unreadable):
            if batch is not None:
                out = self.model(_normalised(batch.images))
                scores = out.pred_score.flatten().float().numpy()
                yield ScoredBatch(batch, scores, out.anomaly_map[:, 0].float().numpy())


def _normalised(images: torch.Tensor) -> torch.Tensor:
    return (images - 0.5) / 0.5  # Lite0's mean = std = 0.5
