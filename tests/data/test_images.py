import numpy as np
import pytest
from PIL import Image

from adformer.data.images import read_image, read_mask
from adformer.errors import AdformerError


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "I;16", "I", "1", "CMYK"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    ramp = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1))
    image = Image.fromarray(ramp).convert(mode) if mode != "I;16" else None
    if mode == "I;16":
        image = Image.fromarray(ramp.astype(np.uint16) * 257)
    path = tmp_path / f"x_{mode.replace(';', '')}.{'tif' if mode in ('CMYK', 'I') else 'png'}"
    image.save(path)
    rgb = read_image(path)
    assert rgb.mode == "RGB" and rgb.size == (64, 8)


def test_16_bit_keeps_its_contrast(tmp_path):
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16)[None].repeat(4, 0)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    grey = np.asarray(read_image(tmp_path / "deep.png"))[..., 0]
    assert grey.min() == 0 and grey.max() == 255


def test_truncated_image_is_named(tmp_path):
    path = tmp_path / "broken.png"
    Image.new("RGB", (64, 64), "red").save(path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(AdformerError, match="broken.png"):
        read_image(path)


def test_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(AdformerError, match="notes.png"):
        read_image(tmp_path / "notes.png")


def test_mask_is_boolean(tmp_path):
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4, 2:4] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").sum() == 4
