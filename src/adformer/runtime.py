"""The torch-free runtime: runs an ONNX export (`adformer export`) with onnxruntime, NumPy and
Pillow only (``pip install "adformer[runtime]"``), with the detector's image decoding and
resizing and the same `Prediction` (scores, maps, decisions).

>>> model = adformer.runtime.load("exports/uniad")  # doctest: +SKIP
>>> result = model.predict(["part1.png", "part2.png"])  # doctest: +SKIP
>>> result.scores.shape, result.maps.shape, result.anomalous  # doctest: +SKIP
((2,), (2, 224, 224), array([False,  True]))

The threshold stays a setting: ``load(DIR, threshold=...)``, or edit the export's
``adformer-onnx.json``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adformer.data.images import as_image, image_to_array, read_image, split_inputs
from adformer.data.types import Prediction
from adformer.deploy.bundle import read_format
from adformer.deploy.export import FORMAT, FORMAT_VERSION, INPUT, OUTPUTS, SIDECAR, sha256
from adformer.deploy.models import choose_model
from adformer.errors import AdformerError
from adformer.tiling import score_tiled, updated_tiling

BATCH_SIZE = 16


class OnnxModel:
    """One graph of an export; `predict` as `Detector.predict` (no reconstructions)."""

    def __init__(self, directory: Path, entry: dict, meta: dict, session):
        self.name: str = entry["name"]
        self.path = directory / entry["file"]
        self.categories: list[str] = list(entry["categories"])
        self.threshold_: float = float(entry["threshold"])
        self.threshold_source_: str = entry["threshold_source"]
        self.map_low_: float = float(entry["map_low"])
        self.method: str = meta["method"]
        self.image_size: int = meta["image_size"]
        tiling = meta.get("tiling") or {}
        self.tile: int | None = tiling.get("tile")
        self.tile_overlap: int = tiling.get("overlap", 0)
        self.score_pool: int = tiling.get("score_pool", 1)
        self.session = session

    def set_tiling(self, tile: int | None = None, overlap: int | None = None) -> OnnxModel:
        """As `Detector.set_tiling`: tiles of `tile` pixels (0: whole images); None keeps."""
        self.tile, self.tile_overlap = updated_tiling((self.tile, self.tile_overlap), tile, overlap)
        return self

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, 3, S, S) float32 in [0, 1] → scores (B,), maps (B, S, S)."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        size = self.image_size
        if images.ndim != 4 or images.shape[1:] != (3, size, size):
            raise AdformerError(f"expected a (B, 3, {size}, {size}) batch, got {images.shape}")
        scores, maps = self.session.run(list(OUTPUTS), {INPUT: images})
        return scores, maps

    def predict(
        self,
        images: Sequence[str | Path | object] | str | Path,
        reconstructions: bool = False,
        batch_size: int = BATCH_SIZE,
    ) -> Prediction:
        """Scores and maps for image paths, folders, PIL images or HxWxC arrays; unreadable
        files are skipped with a warning and listed in `Prediction.skipped`."""
        del reconstructions  # an export has no reconstructions: the argument is accepted
        files, in_memory = split_inputs(images)
        paths, skipped = [], []
        decoded = _decode(files, in_memory, skipped)
        size = self.image_size
        scores, maps = [np.zeros(0, np.float32)], [np.zeros((0, size, size), np.float32)]
        if self.tile is not None:  # one image at a time, tile by tile
            for path, image in decoded:
                score, amap, _ = score_tiled(
                    image,
                    lambda tiles: (self.infer(tiles)[1], None),
                    tile=self.tile,
                    overlap=self.tile_overlap,
                    size=size,
                    score_pool=self.score_pool,
                    batch_size=batch_size,
                )
                scores.append(np.array([score], np.float32))
                maps.append(amap[None])
                paths.append(path)
        else:
            arrays = []
            for path, image in decoded:
                arrays.append(image_to_array(image, size))
                paths.append(path)
            for start in range(0, len(arrays), batch_size):
                s, m = self.infer(np.stack(arrays[start : start + batch_size]))
                scores.append(s)
                maps.append(m)
        score_array = np.concatenate(scores)
        return Prediction(
            score_array, np.concatenate(maps), score_array > self.threshold_, paths, skipped
        )


def _decode(files: Sequence[Path], in_memory: Sequence, skipped: list[str]):
    """(path, RGB image) of each file that decodes (the others are warned about and added
    to `skipped`), then ("", image) of each in-memory image."""
    for path in files:
        try:
            image = read_image(path)
        except AdformerError as error:
            warnings.warn(f"skipped: {error}", stacklevel=3)
            skipped.append(str(path))
            continue
        yield str(path), image
    for image in in_memory:
        yield "", as_image(image)


class Runtime:
    """An export's models: one (a unified or adapted model), or one per category."""

    backend = "onnx"

    def __init__(self, directory: Path, meta: dict, models: list[OnnxModel]):
        self.directory = directory
        self.meta = meta
        self.method: str = meta["method"]
        self.image_size: int = meta["image_size"]
        self.models = models

    @property
    def categories(self) -> list[str]:
        return [c for model in self.models for c in model.categories]

    def model(self, category: str | None = None) -> OnnxModel:
        """The model that scores `category` (with one model, None picks it)."""
        groups = {i: model.categories for i, model in enumerate(self.models)}
        return self.models[choose_model(self.directory, groups, category)]

    def predict(self, images, category: str | None = None, batch_size: int = BATCH_SIZE):
        """`OnnxModel.predict` with the model of `category`."""
        return self.model(category).predict(images, batch_size=batch_size)


def is_export(directory: str | Path) -> bool:
    return (Path(directory) / SIDECAR).is_file()


def read_sidecar(directory: str | Path) -> dict:
    return read_format(
        Path(directory) / SIDECAR,
        FORMAT,
        FORMAT_VERSION,
        "an adformer ONNX export",
        "Export the run again.",
    )


def load(
    directory: str | Path,
    *,
    threshold: float | None = None,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
) -> Runtime:
    """Open an export; every graph's checksum is verified. `threshold` replaces the exported
    one for every model; `providers` are onnxruntime's (default: what it has, best first);
    `threads` its intra-op threads (default: its own choice)."""
    try:
        import onnxruntime
    except ImportError as error:
        raise AdformerError(
            "the ONNX runtime needs onnxruntime: pip install 'adformer[runtime]'"
        ) from error
    directory = Path(directory)
    meta = read_sidecar(directory)
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    providers = list(providers or onnxruntime.get_available_providers())
    models = []
    for entry in meta["models"]:
        path = directory / entry["file"]
        if not path.is_file():
            raise AdformerError(f"{path} is missing from the export")
        if sha256(path) != entry["sha256"]:
            raise AdformerError(f"{path} does not match its checksum in {SIDECAR}: export again")
        session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        model = OnnxModel(directory, entry, meta, session)
        if threshold is not None:
            model.threshold_, model.threshold_source_ = float(threshold), "set at load"
        models.append(model)
    return Runtime(directory, meta, models)
