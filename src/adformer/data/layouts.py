"""The field's other data-set layouts, read into the same `CategoryData` as MVTec AD:

- ``visa``: VisA (arXiv:2207.14315), described by ``ROOT/split_csv/1cls.csv`` with the columns
  object, split, label, image, mask (paths relative to ROOT; labels ``normal``/``anomaly``;
  masks with any non-zero value marking the defect);
- ``btad``: BTAD (arXiv:2104.10036), ``ROOT/NN/train/ok``, ``ROOT/NN/test/{ok,ko}``,
  ``ROOT/NN/ground_truth/ko`` (.bmp and .png, a mask matched by file stem);
- ``folder``: a plain folder of one product, ``good/``, ``bad/`` and optional ``masks/``
  (matched by file stem); a seeded share of ``good/`` is held out as the test's good images.

MVTec AD and MPDD share the ``mvtec`` layout (`adformer.data.folders`). `detect_layout`
names the layout of a root when only one fits.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adformer.data.folders import check_mask_size, raise_problems
from adformer.data.images import is_image_file
from adformer.data.types import CategoryData, Sample
from adformer.errors import AdformerError

LAYOUTS = ("mvtec", "visa", "btad", "folder")
VISA_SPLIT = Path("split_csv") / "1cls.csv"
FOLDER_TEST_SHARE = 0.2  # of good/ held out for testing in the folder layout
FOLDER_SEED = 0


def detect_layout(root: Path) -> str:
    """The layout of `root` (mvtec when none fits); an error naming them if several fit."""
    found = []
    if (root / VISA_SPLIT).is_file():
        found.append("visa")
    subfolders = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    if any((p / "train" / "ok").is_dir() for p in subfolders):
        found.append("btad")
    if (root / "good").is_dir() and (root / "bad").is_dir():
        found.append("folder")
    if (root / "train" / "good").is_dir() or any(
        (p / "train" / "good").is_dir() for p in subfolders
    ):
        found.append("mvtec")
    if not found:
        return "mvtec"  # whose reader says what it expected
    if len(found) > 1:
        raise AdformerError(
            f"cannot tell the layout of {root} ({' and '.join(found)} fit): pass --layout "
            f"{{{','.join(LAYOUTS)}}} (mvtec: CAT/train/good; visa: split_csv/1cls.csv; "
            "btad: NN/train/ok; folder: good/ and bad/)"
        )
    return found[0]


def _chosen(available: list[str], categories: Sequence[str] | None, root: Path) -> list[str]:
    if not categories or list(categories) == ["all"]:
        return available
    missing = sorted(set(categories) - set(available))
    if missing:
        raise AdformerError(f"categories {missing} not found in {root}: {', '.join(available)}")
    return list(categories)


def load_visa(root: Path, categories: Sequence[str] | None = None) -> list[CategoryData]:
    table = root / VISA_SPLIT
    try:
        with open(table, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise AdformerError(f"cannot read {table}: {error}") from error
    columns = {"object", "split", "label", "image", "mask"}
    if not rows or not columns <= set(rows[0]):
        raise AdformerError(f"{table} needs the columns {sorted(columns)}")
    names = sorted({r["object"] for r in rows})
    out = []
    for name in _chosen(names, categories, root):
        train, test, problems = [], [], []
        for row in (r for r in rows if r["object"] == name):
            path, bad = root / row["image"], row["label"].strip().lower() != "normal"
            if not path.is_file():
                problems.append(f"{table} names {path}, which does not exist")
                continue
            mask = root / row["mask"] if bad and row["mask"].strip() else None
            if mask is not None:
                if not mask.is_file():
                    problems.append(f"{table} names the mask {mask}, which does not exist")
                    continue
                check_mask_size(path, mask, problems)
            if row["split"].strip().lower() == "train":
                if bad:
                    problems.append(f"{table} puts the anomalous {path} in the training split")
                train.append(Sample(path, name))
            else:
                test.append(Sample(path, name, int(bad), "anomaly" if bad else "good", mask))
        raise_problems(name, problems)
        if not train:
            raise AdformerError(f"category '{name}' has no training images in {table}")
        out.append(CategoryData(name, train, test, any(s.mask_path for s in test)))
    return out


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image_file(p)) if folder.is_dir() else []


def _by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in _images(folder)}


def load_btad(root: Path, categories: Sequence[str] | None = None) -> list[CategoryData]:
    names = sorted(p.name for p in root.iterdir() if (p / "train" / "ok").is_dir())
    out = []
    for name in _chosen(names, categories, root):
        folder = root / name
        train = [Sample(p, name) for p in _images(folder / "train" / "ok")]
        if not train:
            raise AdformerError(f"category '{name}' has no images in {folder / 'train' / 'ok'}")
        test = [Sample(p, name, 0, "good") for p in _images(folder / "test" / "ok")]
        truth = folder / "ground_truth" / "ko"
        masks, problems = _by_stem(truth), []
        for path in _images(folder / "test" / "ko"):
            mask = masks.pop(path.stem, None)
            if mask is None and truth.is_dir():
                problems.append(f"no mask for {path} in {truth}")
            elif mask is not None:
                check_mask_size(path, mask, problems)
            test.append(Sample(path, name, 1, "ko", mask))
        problems += [f"mask {m} matches no image in test/ko" for m in masks.values()]
        raise_problems(name, problems)
        out.append(CategoryData(name, train, test, any(s.mask_path for s in test)))
    return out


def load_folder(root: Path, categories: Sequence[str] | None = None) -> list[CategoryData]:
    """One category named after the folder; `FOLDER_TEST_SHARE` of ``good/`` (seeded, the
    same on every call) is the test's good images, never trained on."""
    name = root.resolve().name
    _chosen([name], categories, root)
    good = _images(root / "good")
    if len(good) < 2:
        raise AdformerError(f"{root / 'good'} needs at least 2 images (found {len(good)})")
    held = max(1, round(len(good) * FOLDER_TEST_SHARE))
    order = np.random.default_rng(FOLDER_SEED).permutation(len(good))
    test_good = {good[i] for i in order[:held]}
    train = [Sample(p, name) for p in good if p not in test_good]
    test = [Sample(p, name, 0, "good") for p in good if p in test_good]
    masks, problems = _by_stem(root / "masks"), []
    for path in _images(root / "bad"):
        mask = masks.pop(path.stem, None)
        if mask is not None:
            check_mask_size(path, mask, problems)
        test.append(Sample(path, name, 1, "bad", mask))
    problems += [f"mask {m} matches no image in bad/" for m in masks.values()]
    raise_problems(name, problems)
    has_masks = any(s.mask_path for s in test)
    if has_masks and any(s.label and s.mask_path is None for s in test):
        missing = [str(s.path) for s in test if s.label and s.mask_path is None]
        raise AdformerError(f"masks/ has no mask for {missing[:5]}: give all or none")
    return [CategoryData(name, train, test, has_masks)]
