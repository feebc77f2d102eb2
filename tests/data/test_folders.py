import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adformer.data import Sample, list_categories, load_category, load_root, validation_split
from adformer.data.dataset import ImageDataset
from adformer.errors import AdformerError


def test_synthetic_layout_reads_back(synthetic_root):
    assert list_categories(synthetic_root) == ["dots", "grating"]
    data = load_category(synthetic_root, "grating")
    assert data.has_masks and len(data.train) == 16
    defects = [s for s in data.test if s.label == 1]
    assert len(defects) == 6 and all(s.mask_path is not None for s in defects)
    assert all(s.mask_path.stem == s.path.stem + "_mask" for s in defects)


def test_masks_load_resized_nearest_and_nonempty(synthetic_root):
    data = load_category(synthetic_root, "dots")
    items = ImageDataset([s for s in data.test if s.label == 1], size=48)
    for item in items:
        assert item["mask"].shape == (48, 48) and item["mask"].dtype == torch.bool
        assert item["mask"].any() and item["image"].shape == (3, 48, 48)


def test_category_all_and_single_folder(synthetic_root):
    assert [c.name for c in load_root(synthetic_root, ["all"])] == ["dots", "grating"]
    assert [c.name for c in load_root(synthetic_root / "dots")] == ["dots"]


@pytest.fixture
def copy(synthetic_root, tmp_path):
    target = tmp_path / "data"
    shutil.copytree(synthetic_root, target)
    return target


def test_missing_root(tmp_path):
    with pytest.raises(AdformerError, match="not found"):
        load_root(tmp_path / "nope")


def test_root_without_categories(tmp_path):
    with pytest.raises(AdformerError, match="no categories"):
        load_root(tmp_path)


def test_unknown_category(copy):
    with pytest.raises(AdformerError, match="'cable' not found"):
        load_root(copy, ["cable"])


def test_category_without_train_good(copy):
    shutil.rmtree(copy / "dots" / "train")
    with pytest.raises(AdformerError, match="no train/good"):
        load_category(copy, "dots")


def test_empty_train_good(copy):
    for f in (copy / "dots" / "train" / "good").iterdir():
        f.unlink()
    with pytest.raises(AdformerError, match="no images"):
        load_category(copy, "dots")


def test_missing_mask_is_named(copy):
    mask = next((copy / "dots" / "ground_truth" / "blob").iterdir())
    mask.unlink()
    with pytest.raises(AdformerError, match="no mask for"):
        load_category(copy, "dots")


def test_mask_of_wrong_size(copy):
    mask = next((copy / "dots" / "ground_truth" / "blob").iterdir())
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(mask)
    with pytest.raises(AdformerError, match="mask .* is \\(10, 10\\)"):
        load_category(copy, "dots")


def test_stray_mask(copy):
    Image.fromarray(np.zeros((96, 96), np.uint8)).save(
        copy / "dots" / "ground_truth" / "blob" / "999_mask.png"
    )
    with pytest.raises(AdformerError, match="matches no image"):
        load_category(copy, "dots")


def test_category_without_masks_is_image_level(copy):
    shutil.rmtree(copy / "dots" / "ground_truth")
    data = load_category(copy, "dots")
    assert not data.has_masks and all(s.mask_path is None for s in data.test)


def test_validation_split_is_deterministic_and_from_train(synthetic_root):
    data = load_category(synthetic_root, "dots")
    fit1, val1 = validation_split(data.train)
    fit2, val2 = validation_split(list(reversed(data.train)))
    assert set(val1) == set(val2) and len(val1) == 2  # 10% of 16, rounded
    assert not set(val1) & set(fit1) and set(fit1) | set(val1) == set(data.train)
    assert not set(val1) & set(data.test)
    many = [Sample(Path(f"/x/{i}.png"), "x") for i in range(300)]
    assert len(validation_split(many, 0.1, 20)[1]) == 20  # 10%, at most 20
    assert validation_split(data.train[:1]) == (data.train[:1], [])
