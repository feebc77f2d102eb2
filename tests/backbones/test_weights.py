import numpy as np
import pytest
import timm
import torch
from PIL import Image

from adformer.backbones import FeatureExtractor, resolve_weights
from adformer.backbones.weights import map_in_order
from adformer.errors import AdformerError


def test_packaged_weights_are_real_imagenet_weights():
    """skimage's chelsea photo is classified as ImageNet class 285, Egyptian cat."""
    from skimage import data

    weights = resolve_weights("tf_efficientnet_lite0")
    assert weights.source.startswith("package") and weights.mean == (0.5, 0.5, 0.5)
    model = timm.create_model("tf_efficientnet_lite0")
    model.load_state_dict(weights.state_dict, strict=False)
    model.eval()
    image = Image.fromarray(data.chelsea()).resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float()[None] / 255
    mean, std = (
        torch.tensor(weights.mean).view(1, 3, 1, 1),
        torch.tensor(weights.std).view(1, 3, 1, 1),
    )
    with torch.no_grad():
        assert model((x - mean) / std).argmax().item() == 285


def test_offline_without_weights_says_what_was_tried(tmp_path):
    with pytest.raises(AdformerError) as error:
        resolve_weights("resnet18", allow_download=False, cache_dir=tmp_path)
    message = str(error.value)
    assert "no weights package" in message and "hub cache" in message
    assert "download disabled" in message and "--backbone-weights" in message


def test_unknown_backbone():
    with pytest.raises(AdformerError, match="unknown backbone"):
        resolve_weights("not_a_net")


def test_explicit_file_roundtrip(tmp_path):
    from safetensors.torch import save_file

    state = timm.create_model("resnet18").state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "r18.safetensors"))
    weights = resolve_weights("resnet18", tmp_path / "r18.safetensors")
    assert weights.source.startswith("file")
    assert torch.equal(weights.state_dict["fc.weight"], state["fc.weight"])
    with pytest.raises(AdformerError, match="not found"):
        resolve_weights("resnet18", tmp_path / "missing.pth")


def test_map_in_order_refuses_mismatched_shapes():
    a = {"x.weight": torch.zeros(2, 3)}
    with pytest.raises(AdformerError, match="do not fit"):
        map_in_order(a, {"y.weight": torch.zeros(3, 2)}, "test")


def test_extractor_is_frozen_and_aligned():
    fx = FeatureExtractor(
        "tf_efficientnet_lite0", (1, 2, 3, 4), resolve_weights("tf_efficientnet_lite0")
    )
    assert fx.channels == [16, 24, 40, 112] and fx.strides == [2, 4, 8, 16]
    fx.train()
    assert not fx.training and not any(p.requires_grad for p in fx.parameters())
    out = fx.aligned(torch.rand(2, 3, 64, 64), stride=16)
    assert out.shape == (2, 192, 4, 4)
