"""The MVTec AD folder layout: ``ROOT/CAT/train/good``, ``ROOT/CAT/test/<defect>``,
``ROOT/CAT/ground_truth/<defect>/<name>_mask.png``.

Categories may lack ``ground_truth`` (then only image-level metrics apply). Every problem a
user can make in such a tree is reported before any work starts, naming the files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from adformer.data.images import image_size, is_image_file
from adformer.data.types import CategoryData, Sample
from adformer.errors import AdformerError

GOOD = "good"


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def list_categories(root: str | Path) -> list[str]:
    """Sub-folders of `root` that look like categories (they hold ``train/good``)."""
    root = Path(root)
    if not root.is_dir():
        raise AdformerError(f"data root not found: {root}")
    names = sorted(p.name for p in root.iterdir() if (p / "train" / GOOD).is_dir())
    if not names:
        raise AdformerError(
            f"no categories in {root}: expected sub-folders laid out as CAT/train/good "
            "(MVTec AD layout)"
        )
    return names


def _mask_for(image: Path, mask_dir: Path) -> Path | None:
    for candidate in sorted(mask_dir.glob(f"{image.stem}_mask.*")) + sorted(
        mask_dir.glob(f"{image.stem}.*")
    ):
        if is_image_file(candidate):
            return candidate
    return None


def _read_test(folder: Path, name: str) -> tuple[list[Sample], bool]:
    """``folder/test/<defect>`` samples with their masks; every mismatch is reported at once."""
    truth = folder / "ground_truth"
    has_masks = truth.is_dir()
    test: list[Sample] = []
    problems: list[str] = []
    test_dir = folder / "test"
    defects = sorted(p.name for p in test_dir.iterdir() if p.is_dir()) if test_dir.is_dir() else []
    for defect in defects:
        for path in _images(test_dir / defect):
            if defect == GOOD:
                test.append(Sample(path, name, 0, GOOD))
                continue
            mask = _mask_for(path, truth / defect) if has_masks else None
            if has_masks and mask is None:
                problems.append(f"no mask for {path} in {truth / defect}")
            elif mask is not None:
                check_mask_size(path, mask, problems)
            test.append(Sample(path, name, 1, defect, mask))
    if has_masks:
        used = {s.mask_path for s in test if s.mask_path is not None}
        for defect_dir in sorted(p for p in truth.iterdir() if p.is_dir()):
            stray = [m for m in _images(defect_dir) if m not in used]
            problems += [f"mask {m} matches no image in test/{defect_dir.name}" for m in stray]
    raise_problems(name, problems)
    return test, has_masks


def check_mask_size(image: Path, mask: Path, problems: list[str]) -> None:
    """Note in `problems` if `mask` and `image` differ in size (read from the headers)."""
    if image_size(mask) != image_size(image):
        problems.append(
            f"mask {mask} is {image_size(mask)} but its image {image} is {image_size(image)}"
        )


def raise_problems(name: str, problems: list[str]) -> None:
    """One error listing (the first ten of) a category's mismatched masks or files."""
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise AdformerError(f"category '{name}' has mismatched masks:\n  {shown}{more}")


def load_category(root: str | Path, name: str) -> CategoryData:
    """Read one category's samples, validating masks against their images."""
    folder = Path(root) / name
    if not folder.is_dir():
        raise AdformerError(f"category '{name}' not found in {root}")
    train_dir = folder / "train" / GOOD
    if not train_dir.is_dir():
        raise AdformerError(f"category '{name}' has no train/good folder ({train_dir})")
    train = [Sample(p, name) for p in _images(train_dir)]
    if not train:
        raise AdformerError(f"category '{name}' has no images in {train_dir}")

    test, has_masks = _read_test(folder, name)
    return CategoryData(name, train, test, has_masks)


def load_root(
    root: str | Path, categories: Sequence[str] | None = None, layout: str | None = None
) -> list[CategoryData]:
    """Categories of a data root. ``None`` or ``["all"]`` means every category found.

    ``root`` may also be ``"elpv"`` (the embedded solar-cell data), ``"synthetic"`` (the
    generated textures, `synthetic_benchmark`) or a single category folder.
    `layout` is one of `adformer.data.layouts.LAYOUTS` (``mvtec`` also for MPDD), detected
    when None.
    """
    from adformer.data import layouts

    if str(root) == "elpv":
        from adformer.data.elpv import load_elpv

        return load_elpv(categories)
    if str(root) == "synthetic":
        from adformer.data.synthetic import synthetic_benchmark

        root = synthetic_benchmark()
    root = Path(root)
    if not root.is_dir():
        raise AdformerError(f"data root not found: {root}")
    layout = layout or layouts.detect_layout(root)
    if layout not in layouts.LAYOUTS:
        raise AdformerError(f"unknown layout '{layout}': choose from {', '.join(layouts.LAYOUTS)}")
    if layout != "mvtec":
        return getattr(layouts, f"load_{layout}")(root, categories)
    if (root / "train" / GOOD).is_dir():  # a category folder itself
        root, categories = root.parent, [root.name]
    if not categories or list(categories) == ["all"]:
        categories = list_categories(root)
    return [load_category(root, c) for c in categories]


def load_anomalies(root: str | Path, categories: Sequence[str]) -> dict[str, list[Sample]]:
    """Labelled defects (ADTR+ learns from them, the others validate on them), in MVTec
    layout: ``root/CAT/test/<defect>``
    with optional ``root/CAT/ground_truth/<defect>/<name>_mask.png``.

    Every category found must be one of `categories` (the ones being trained).
    """
    root = Path(root)
    if not root.is_dir():
        raise AdformerError(f"anomaly folder not found: {root}")
    found = sorted(p.name for p in root.iterdir() if (p / "test").is_dir())
    if not found:
        raise AdformerError(f"no categories in anomaly folder {root}: expected CAT/test/<defect>/")
    foreign = sorted(set(found) - set(categories))
    if foreign:
        raise AdformerError(
            f"anomaly folder {root} has categories {foreign} that are not being trained or adapted "
            f"({', '.join(categories)})"
        )
    result = {}
    for name in found:
        defects = [s for s in _read_test(root / name, name)[0] if s.label == 1]
        if not defects:
            raise AdformerError(f"no defect images in {root / name / 'test'}")
        result[name] = defects
    return result


def validation_split(
    samples: Sequence[Sample], fraction: float = 0.1, max_count: int = 20
) -> tuple[list[Sample], list[Sample]]:
    """Hold out a deterministic slice of training images (never test images) for validation.

    The slice depends only on the file names, so it is the same on every run and machine.
    With a single image nothing is held out.
    """
    count = min(max_count, int(round(len(samples) * fraction)))
    if len(samples) > 1:
        count = max(count, 1)
    else:
        count = 0
    ranked = sorted(samples, key=lambda s: hashlib.sha1(s.name.encode()).hexdigest())
    held = set(ranked[:count])
    return [s for s in samples if s not in held], [s for s in samples if s in held]
