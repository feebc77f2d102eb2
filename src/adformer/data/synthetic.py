"""A synthetic-defect generator that writes a small MVTec AD-layout data set with masks.

Good images are seeded procedural textures (one texture family per category, varying in
phase, orientation jitter and noise); defects are scratches and blobs painted on good
images, with their exact pixel masks. Used by tests and demos; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from adformer.data.images import write_png

TEXTURES = ("grating", "dots", "checker")
DEFECTS = ("scratch", "blob", "confetti")
TEST_DEFECTS = ("scratch", "blob")  # what make_synthetic_dataset writes


def _texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    phase = rng.uniform(0, 2 * np.pi)
    angle = rng.normal(0, 0.05)
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    if kind == "grating":
        grey = 0.5 + 0.35 * np.sin(2 * np.pi * 8 * u + phase)
        colour = (0.9, 0.75, 0.5)
    elif kind == "dots":
        grey = 0.3 + 0.5 * (np.sin(2 * np.pi * 6 * u + phase) * np.sin(2 * np.pi * 6 * v) > 0.5)
        colour = (0.5, 0.7, 0.9)
    elif kind == "checker":
        grey = 0.3 + 0.4 * ((np.floor(u * 8 + phase) + np.floor(v * 8)) % 2)
        colour = (0.8, 0.8, 0.8)
    else:
        raise ValueError(f"unknown texture '{kind}', choose from {TEXTURES}")
    grey = grey + rng.normal(0, 0.03, grey.shape)
    rgb = np.stack([grey * c for c in colour], axis=-1)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def _confetti(size: int, rng: np.random.Generator, draw: ImageDraw.ImageDraw) -> None:
    """FCDD's confetti noise: a handful of small rectangles scattered over the image."""
    for _ in range(rng.integers(3, 8)):
        w, h = rng.uniform(0.03, 0.09, 2) * size
        x, y = rng.uniform(0, 1 - 0.09, 2) * size
        draw.rectangle([x, y, x + w, y + h], fill=255)


def paint_defect(
    image: np.ndarray, rng: np.random.Generator, kind: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Paint a synthetic defect on an (H, W, 3) uint8 image; return (image, bool mask).

    Kinds: ``scratch`` (a line), ``blob`` (an ellipse), ``confetti`` (FCDD's confetti noise:
    several small rectangles). Each painted region gets one random colour per defect.
    """
    kind = kind or DEFECTS[rng.integers(len(DEFECTS))]
    height, width = image.shape[:2]
    size = min(height, width)
    mask_image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask_image)
    if kind == "scratch":
        x0, y0 = rng.uniform(0.15, 0.85, 2) * size
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(0.25, 0.45) * size
        x1, y1 = x0 + length * np.cos(angle), y0 + length * np.sin(angle)
        draw.line([(x0, y0), (x1, y1)], fill=255, width=max(2, size // 40))
    elif kind == "blob":
        cx, cy = rng.uniform(0.25, 0.75, 2) * size
        rx, ry = rng.uniform(0.06, 0.14, 2) * size
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    elif kind == "confetti":
        _confetti(size, rng, draw)
    else:
        raise ValueError(f"unknown defect '{kind}', choose from {DEFECTS}")
    mask = np.asarray(mask_image) > 0
    out = image.copy()
    out[mask] = rng.integers(0, 256, 3, dtype=np.uint8) // 2 + (0 if rng.random() < 0.5 else 128)
    return out, mask


def make_synthetic_dataset(
    root: str | Path,
    categories: Sequence[str] = ("grating", "dots"),
    n_train: int = 24,
    n_test_good: int = 6,
    n_test_defect: int = 6,
    size: int = 128,
    seed: int = 0,
) -> Path:
    """Write ``root/<category>/{train,test,ground_truth}`` and return ``root``.

    >>> from adformer.data.synthetic import make_synthetic_dataset
    >>> root = make_synthetic_dataset("/tmp/synth", n_train=4, n_test_good=1, n_test_defect=1)
    """
    root = Path(root)
    for c_index, category in enumerate(categories):
        rng = np.random.default_rng([seed, c_index])
        base = root / category
        for folder in ("train/good", "test/good", *(f"test/{d}" for d in TEST_DEFECTS)):
            (base / folder).mkdir(parents=True, exist_ok=True)
        for d in TEST_DEFECTS:
            (base / "ground_truth" / d).mkdir(parents=True, exist_ok=True)
        for folder, count in (("train/good", n_train), ("test/good", n_test_good)):
            for i in range(count):
                write_png(
                    Image.fromarray(_texture(category, size, rng)), base / folder / f"{i:03d}.png"
                )
        for i in range(n_test_defect):
            kind = TEST_DEFECTS[i % len(TEST_DEFECTS)]
            image, mask = paint_defect(_texture(category, size, rng), rng, kind)
            write_png(Image.fromarray(image), base / f"test/{kind}/{i:03d}.png")
            write_png(
                Image.fromarray(mask.astype(np.uint8) * 255),
                base / f"ground_truth/{kind}/{i:03d}_mask.png",
            )
    return root


# `--data synthetic`: a fixed benchmark anyone can regenerate offline (change the version
# when the generator's output changes, so cached copies are never mixed up)
BENCHMARK = {"categories": TEXTURES, "n_train": 60, "n_test_good": 20, "n_test_defect": 20}
BENCHMARK_SIZE, BENCHMARK_VERSION = 256, 1


def synthetic_benchmark(cache: str | Path | None = None) -> Path:
    """The embedded synthetic textures as an MVTec-layout data set (seed 0; 60 training, 20
    good and 20 defective test images per texture, 256 px, with masks), generated once into
    `cache` (default ``$XDG_CACHE_HOME/adformer`` or ``~/.cache/adformer``)."""
    import os
    import shutil
    import tempfile

    base = Path(cache or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    root = (base if cache else base / "adformer") / f"synthetic-v{BENCHMARK_VERSION}"
    if (root / ".complete").is_file():
        return root
    # written aside, then renamed into place: processes that generate it at the same time
    # (a benchmark's parallel runs) never read each other's half-written images
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    make_synthetic_dataset(staging, size=BENCHMARK_SIZE, seed=0, **BENCHMARK)
    (staging / ".complete").write_text("generated by adformer.data.synthetic.synthetic_benchmark\n")
    for attempt in range(2):
        try:
            staging.rename(root)  # fails while `root` exists
            return root
        except OSError:
            if attempt or (root / ".complete").is_file():  # another process's whole copy
                break
            shutil.rmtree(root, ignore_errors=True)  # a copy interrupted before this rule
    shutil.rmtree(staging, ignore_errors=True)
    return root
