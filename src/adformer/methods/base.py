"""What every detector shares: the scikit-learn contract (`fit` returns self, learned state
ends in ``_``), prediction over images, threshold calibration and bundles.

The public protocol, which the CLI, the evaluator, bundles and the tests rely on:

- ``name``; ``learning_type``: ``one_class`` (one model per category), ``unified`` (one
  model for many categories) or ``few_shot`` (trained on other categories, then `adapt`-ed
  to a new one from k good images, no retraining);
- ``supports_anomalies`` (learns from labelled defects too); ``reconstructs``
  (``predict(..., reconstructions=True)`` works);
- ``presets``: ``paper`` (the published configuration), ``cpu`` (2 CPU cores), ``gpu`` (one
  GPU, offline weights), ``tiny`` (seconds, for tests and smoke runs; not for quality);
- ``fit(data)`` → self; ``is_fitted`` (whether ``predict`` can run);
- ``predict(images)`` → `Prediction`; ``score_samples(samples)`` → `ScoredBatch` per batch
  (what the evaluator calls); ``infer(images)``: a (B, 3, S, S) tensor → scores, maps;
- ``graph()``: the same computation as one export-ready module (what `adformer export` turns
  into ONNX); ``normalisation()``: the backbone's mean/std applied inside, for the record;
- ``modules()``, ``fitted_state()``, ``restore(config, state)``: what a bundle saves (weights
  by prefix, JSON state) and how a detector is rebuilt from it; ``save(dir)``,
  ``adformer.load(dir)``.

A method subclasses `Detector` and implements the hooks: its networks (`_build`, `modules`,
`_trainable`), what it trains on (`_training_sets`), its loss on a typed batch (`_loss`), how
images become maps and scores (`_maps`, `_scores`), statistics after training
(`_after_training`) and option checks (`_check_config`). The engine, data handling,
thresholds and saving come from here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from adformer.data.dataset import image_to_tensor, loader
from adformer.data.folders import load_root, validation_split
from adformer.data.images import as_image, list_images, split_inputs
from adformer.data.types import Batch, CategoryData, Prediction, Sample
from adformer.engine import TrainConfig, Trainer, TrainResult, choose_device, seed_everything
from adformer.errors import AdformerError
from adformer.evaluation.few_shot import training_validation
from adformer.evaluation.thresholds import f1_threshold, quantile_threshold
from adformer.evaluation.validation import (
    DEFECT_PLACES,
    labelled_metrics,
    synthetic_validation,
)
from adformer.tiling import (
    check_tiling,
    score_tiled,
    tile_labelled,
    tile_samples,
    updated_tiling,
)


@dataclass
class DetectorConfig(TrainConfig):
    """Settings every detector has, on top of the optimisation settings."""

    image_size: int = 224
    threshold_quantile: float = 0.99  # of validation normal scores (no anomalies needed)
    val_fraction: float = 0.1
    val_max: int = 20
    anomaly_val_fraction: float = 0.2  # of labelled training anomalies, for validation
    inference_batch_size: int = 16
    tile: int | None = None  # pixels: large images as tiles of this size (adformer.tiling)
    tile_overlap: int = 32  # pixels shared by neighbouring tiles when scoring
    # the image score: the largest mean of the map over windows this wide (at most the map);
    # 1 is the map's maximum, what InTra and RegAD take; UniAD and ADTR pool 16×16
    score_pool: int = 1
    # where `fit`'s validation paints its synthetic defects: "anywhere", or on the "part" only
    # (objects on a plain background; `evaluation.validation.on_part`)
    validation_defects: str = "anywhere"

    def __post_init__(self) -> None:  # also runs on `dataclasses.replace`
        super().__post_init__()
        check_tiling(self.tile, self.tile_overlap)
        if self.score_pool < 1:
            raise AdformerError(
                f"score_pool must be >= 1 (1: the map's maximum), got {self.score_pool}"
            )
        if self.validation_defects not in DEFECT_PLACES:
            raise AdformerError(
                f"validation_defects must be one of {DEFECT_PLACES}, got "
                f"{self.validation_defects!r}"
            )


# what `Detector.calibrate` may change on a fitted detector of any method: how maps become image
# scores and decisions (and the validation that judges them), not what is trained (a method
# adds its own: `Detector.scoring_options`)
SCORING_OPTIONS = ("score_pool", "threshold_quantile", "validation_defects")


def _coerce(name: str, field_type, value):
    """A config value checked against its field's type (`AdformerError` naming the option if
    it does not fit); JSON lists become tuples for tuple-typed fields."""
    if not _fits(field_type, value):
        shown = getattr(field_type, "__name__", None) or str(field_type)
        raise AdformerError(f"option {name} must be {shown}, got {value!r}")
    if isinstance(value, list):
        return tuple(value)
    return value


def _fits(hint, value) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(arg, value) for arg in args)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(args[0], v) for v in value)
        return len(value) == len(args) and all(map(_fits, args, value))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


ImageInput = str | Path | Image.Image | np.ndarray | torch.Tensor


LearningType = Literal["one_class", "unified", "few_shot"]
LEARNING_TYPES: tuple[str, ...] = typing.get_args(LearningType)


@dataclass
class ScoredBatch:
    """One inference batch: the loaded images with their scores, maps and, when asked of a
    method that makes them, reconstructions (B, S, S, 3) uint8."""

    batch: Batch
    scores: np.ndarray  # (B,) float32
    maps: np.ndarray  # (B, S, S) float32
    reconstructions: np.ndarray | None = None


class Detector:
    """Base of all methods. Use `adformer.create(name, ...)`, not this class directly."""

    name: ClassVar[str] = ""
    learning_type: ClassVar[LearningType] = "one_class"
    config_class: ClassVar[type[DetectorConfig]] = DetectorConfig
    presets: ClassVar[dict[str, dict]] = {"paper": {}}
    supports_anomalies: ClassVar[bool] = False  # can learn from labelled defects too
    reconstructs: ClassVar[bool] = False  # predict(..., reconstructions=True) is available
    scoring_options: ClassVar[tuple[str, ...]] = SCORING_OPTIONS  # what `calibrate` may change

    def __init__(self, config: DetectorConfig | None = None):
        self.config = config if config is not None else self.config_class()
        # what fit()/load() learn; None until then
        self.categories_: list[str] | None = None
        self.threshold_: float | None = None
        self.threshold_source_: str | None = None
        self.map_low_: float | None = None  # median normal map value: the heat map's blue end
        self.train_result_: TrainResult | None = None
        self.training_: dict | None = None  # best epoch, epochs run, seconds, samples (bundled)
        self.device_: torch.device | None = None
        # metrics on held-out good images vs synthetic defects painted on them (no test data)
        self.validation_: dict | None = None

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_options(cls, preset: str | None = None, **options) -> Detector:
        """A detector from a preset and options, validated (what `adformer.create` calls). An
        option given as None sets None (``patience=None``: no early stopping), whatever the
        preset says."""
        preset = preset or "paper"
        if preset not in cls.presets:
            raise AdformerError(
                f"unknown preset '{preset}' for {cls.name}: choose from {', '.join(cls.presets)}"
            )
        values = {**cls.presets[preset], **options}
        detector = cls(cls.make_config(values))
        detector._check_config()
        return detector

    @classmethod
    def make_config(cls, values: dict) -> DetectorConfig:
        hints = typing.get_type_hints(cls.config_class)
        names = {f.name for f in dataclasses.fields(cls.config_class)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise AdformerError(
                f"unknown option(s) {unknown} for {cls.name}; valid: {', '.join(sorted(names))}"
            )
        return cls.config_class(**{k: _coerce(k, hints[k], v) for k, v in values.items()})

    def build(self, pretrained: bool = True, device: str | torch.device | None = None) -> Detector:
        """Create the networks without training them (ImageNet weights where the method uses a
        backbone and `pretrained`): to time them, or to load weights into."""
        self._check_config()
        self._build(pretrained)
        return self.to(device or self.device_ or "cpu")

    @classmethod
    def restore(cls, config: dict, state: dict) -> Detector:
        """The inverse of ``config`` + `fitted_state`: a detector whose networks exist (weights
        still to be loaded into `modules`) and whose fitted state is set."""
        detector = cls(cls.make_config(config))
        detector._check_config()
        detector._build(pretrained=False)
        detector._restore_state(state)  # may add modules the weights fill (adapted RegAD)
        return detector

    # ----------------------------------------------------------------- method hooks
    def _build(self, pretrained: bool) -> None:
        """Create the networks (``self.*_``); `pretrained` is False when a bundle has weights."""
        raise NotImplementedError

    def modules(self) -> dict[str, nn.Module]:
        """The modules whose weights (and buffers) make up the bundle, by prefix."""
        raise NotImplementedError

    def _trainable(self) -> nn.Module:
        raise NotImplementedError

    def _check_config(self) -> None:
        """Refuse bad options before any work starts (default: nothing to check)."""

    def _wants_anomalies(self) -> bool:
        """Whether the config asks for anomalies of its own making (e.g. synthetic ones)."""
        return False

    def _training_sets(
        self,
        train: list[Sample],
        val: list[Sample],
        device: torch.device,
        anomalies: tuple[list[Sample], list[Sample]] = ([], []),
    ) -> tuple[Dataset, Dataset | None]:
        """Training and validation datasets of typed batches; `anomalies` are labelled defects
        (fit, val)."""
        raise NotImplementedError

    def _loss(self, network: nn.Module, batch) -> torch.Tensor:
        raise NotImplementedError

    def _maps(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] → (B, S, S) anomaly maps (eval mode, no grad)."""
        raise NotImplementedError

    def _outputs(self, images: torch.Tensor, reconstruct: bool) -> tuple[torch.Tensor, ...]:
        """Maps, and for methods that reconstruct images also (B, 3, S, S) reconstructions."""
        return (self._maps(images),)

    @property
    def score_pool(self) -> int:
        """The image score is the largest mean of the map over windows this wide (1: the
        maximum); `tiling.pooled_max` is the same on a stitched map."""
        return self.config.score_pool

    def _scores(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, S, S) → (B,) image scores."""
        pool = min(self.score_pool, *maps.shape[-2:])
        if pool > 1:  # separably: the mean over a window's rows of the means along them
            maps = F.avg_pool2d(maps[:, None], (pool, 1), stride=1)
            maps = F.avg_pool2d(maps, (1, pool), stride=1)
        return maps.flatten(1).amax(1)

    def _after_training(self, train: list[Sample]) -> None:
        """Statistics a method fits on training images after the network (default: none)."""

    @torch.no_grad()
    def _pixel_moments(self, maps: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance at each pixel over batches of maps (B, S, S), computed lazily with
        the networks in eval mode; one pass, E[m²] − E[m]² in float64."""
        for module in self.modules().values():
            module.eval()
        total, squares, count = 0.0, 0.0, 0
        for m in maps:
            m = m.double()
            total, squares = total + m.sum(0), squares + m.square().sum(0)
            count += len(m)
        mean = total / count
        return mean, (squares / count - mean.square()).clamp_min(1e-12)

    def _image_batches(self, samples: Sequence[Sample]) -> Iterator[torch.Tensor]:
        """`samples` decoded in inference batches, on the detector's device."""
        for batch in loader(samples, self.config.image_size, self.config.inference_batch_size):
            yield batch.images.to(self.device_)

    def _restore_state(self, state: dict) -> None:
        self.threshold_ = state["threshold"]
        self.threshold_source_ = state["threshold_source"]
        self.map_low_ = state["map_low"]
        self.categories_ = state["categories"]
        self.validation_ = state.get("validation")
        self.training_ = state.get("training")

    # ----------------------------------------------------------------- training
    def fit(
        self,
        data,
        *,
        run_dir: str | Path | None = None,
        resume: bool = False,
        device: str | torch.device | None = None,
        progress: bool = True,
        checkpoint_every: float | None = None,
    ) -> Detector:
        """Learn from good images: a data root, `CategoryData`(s), `Sample`s or image paths.

        A deterministic slice of the training images (never test images) is held out per
        category for validation loss, best-weight selection and the threshold. Labelled
        defects in ``CategoryData.anomalies`` are used by methods that support them.
        A few-shot method is then `adapt`-ed to the category it is to inspect. With `run_dir`,
        a checkpoint is written there at most every `checkpoint_every` seconds (default
        `adformer.engine.CHECKPOINT_EVERY`; 0: every epoch) and after the last epoch.

        >>> detector = adformer.create("uniad", preset="cpu").fit("path/to/mvtec")  # doctest: +SKIP
        """
        split = self._split(_as_categories(data))
        trained = self._training_split(split)
        self._train(trained, run_dir, resume, device, progress, checkpoint_every)
        self._after_training(trained.train)
        self._calibrate_held_out(split)
        return self

    def calibrate(self, data, **options) -> Detector:
        """Set the threshold and `validation_` again, without training, from the images `fit`
        holds out of `data`, after changing any of the options that change no training
        (`scoring_options`): give `fit`'s data to compare score windows on the same held-out
        images (with its labelled defects, as `CategoryData.anomalies`, for the F1 threshold and
        ``validation_["labelled"]`` again), or other good images to re-threshold on them. A
        few-shot detector is calibrated by `adapt`; before it is adapted only its validation
        is redone.

        >>> detector.calibrate("path/to/mvtec", score_pool=48).validation_  # doctest: +SKIP
        """
        if self.categories_ is None:
            raise AdformerError(f"{self.name} is not fitted: fit it before calibrating")
        if self.learning_type == "few_shot" and self.is_fitted:
            raise AdformerError(f"{self.name} is adapted: adapt it again to calibrate it")
        retrain = sorted(set(options) - set(self.scoring_options))
        if retrain:
            raise AdformerError(
                f"{retrain} change(s) training: fit again; calibrate changes only "
                f"{', '.join(self.scoring_options)}"
            )
        self.config = self.make_config({**dataclasses.asdict(self.config), **options})
        self._calibrate_held_out(self._split(_as_categories(data)))
        return self

    def _calibrate_held_out(self, split: _Split) -> None:
        if self.learning_type == "few_shot":  # calibrated when adapted to a category
            self.validation_ = training_validation(self, split.train, split.val, self.config.seed)
        else:
            self._calibrate(split.val or split.train, split.anomalies_val)

    def _split(self, categories: list[CategoryData]) -> _Split:
        self._check_config()
        split = _Split([c.name for c in categories])
        for category in categories:
            fit_part, val_part = validation_split(
                category.train, self.config.val_fraction, self.config.val_max
            )
            if self.supports_anomalies:
                a_fit, a_val = validation_split(
                    category.anomalies, self.config.anomaly_val_fraction, len(category.anomalies)
                )
            else:  # learns from none: validates on them all
                a_fit, a_val = [], list(category.anomalies)
            split.train += fit_part
            split.val += val_part
            split.anomalies_fit += a_fit
            split.anomalies_val += a_val
        if self._wants_anomalies() and not self.supports_anomalies:
            raise AdformerError(
                f"{self.name} learns from good images only; use a method that can learn from "
                "anomalies (adtr)"
            )
        if split.anomalies_val and self.learning_type == "few_shot":
            raise AdformerError(
                f"{self.name} trains on good images of other categories and adapts to good "
                "images of the new one: it takes no labelled defects"
            )
        return split

    def _training_split(self, split: _Split) -> _Split:
        """What the networks train on: labelled defects only for a method that learns from
        them (the others are never shown theirs: they validate on them, whole, in
        `_calibrate`); with tiling, the tiles of the images and of the defects with their
        masks (the threshold is still set on whole validation images, scored tiled)."""
        if not self.supports_anomalies:
            split = dataclasses.replace(split, anomalies_val=[])
        tile = self.config.tile
        if tile is None:
            return split
        return dataclasses.replace(
            split,
            train=tile_samples(split.train, tile),
            val=tile_samples(split.val, tile),
            anomalies_fit=tile_labelled(split.anomalies_fit, tile),
            anomalies_val=tile_labelled(split.anomalies_val, tile),
        )

    def _train(
        self, split: _Split, run_dir, resume: bool, device, progress: bool, checkpoint_every=None
    ) -> None:
        """Build the networks and train them (no post-training statistics, no threshold)."""
        self.categories_ = split.categories
        self.device_ = choose_device(device)
        seed_everything(self.config.seed)  # the initial weights depend on the seed alone
        self._build(pretrained=True)
        self.to(self.device_)
        anomalies = (split.anomalies_fit, split.anomalies_val)
        train_set, val_set = self._training_sets(split.train, split.val, self.device_, anomalies)
        config = self.config  # `max_steps` is per category: a unified model gets each its share
        if config.max_steps is not None:
            config = dataclasses.replace(config, max_steps=config.max_steps * len(split.categories))
        trainer = Trainer(
            config,
            self.device_,
            run_dir,
            progress,
            fingerprint={"method": self.name, **dataclasses.asdict(self.config)},
            checkpoint_every=checkpoint_every,
        )
        self.train_result_ = trainer.fit(
            self._trainable(), self._loss, train_set, val_set, resume=resume
        )
        result = self.train_result_
        self.training_ = {
            "best_epoch": result.best_epoch + 1,
            "epochs_run": result.epochs_run,
            "epochs_planned": result.epochs_planned,
            "seconds": round(sum(h.get("seconds", 0.0) for h in result.history), 1),
            "samples": len(split.train),  # tiles, when tiled
        }

    def _calibrate(self, normals: Sequence[Sample], anomalies: Sequence[Sample] = ()) -> None:
        """Threshold: F1-optimal on validation normals + validation anomalies when labelled
        anomalies exist, else a high quantile of validation normal scores. `map_low_` (the
        median normal map value) anchors the blue end of heat maps. The same scoring pass
        gives the normal half of `validation_` (normals vs synthetic defects on them, and vs
        the labelled anomalies under ``"labelled"``)."""
        scored = list(self.score_samples(normals, skip_unreadable=False))
        scores = np.concatenate([s.scores for s in scored])
        maps = np.concatenate([s.maps for s in scored])
        self.map_low_ = float(np.median(np.median(maps.reshape(len(maps), -1), axis=1)))
        bad = list(self.score_samples(anomalies, skip_unreadable=False)) if anomalies else []
        if bad:
            threshold = f1_threshold(scores, np.concatenate([s.scores for s in bad]))
        else:
            threshold = quantile_threshold(scores, self.config.threshold_quantile)
        self.threshold_, self.threshold_source_ = threshold.value, threshold.source
        self.validation_ = synthetic_validation(self, normals, self.config.seed, (scores, maps))
        if bad and self.validation_ is not None:
            self.validation_["labelled"] = labelled_metrics((scores, maps), bad)

    # ----------------------------------------------------------------- state
    @property
    def is_fitted(self) -> bool:
        """Whether `predict` can run: fitted (few-shot: adapted) or loaded."""
        return self.threshold_ is not None

    def default_test_categories(self) -> list[str]:
        """What `adformer test` evaluates when no --category is given: the fitted ones."""
        self._check_fitted()
        return list(self.categories_)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise AdformerError(f"this {self.name} detector is not fitted: call fit() or load()")

    def fitted_state(self) -> dict:
        """What was learned beyond weights (JSON-able), saved in the bundle's config.json."""
        return {
            "threshold": self.threshold_,
            "threshold_source": self.threshold_source_,
            "map_low": self.map_low_,
            "categories": self.categories_,
            "validation": self.validation_,
            "training": self.training_,
        }

    def set_tiling(self, tile: int | None = None, overlap: int | None = None) -> Detector:
        """Score images as tiles of `tile` pixels (0: whole images) sharing `overlap` pixels;
        None keeps the setting (by default the one fitted, under which the threshold was set)."""
        self.config.tile, self.config.tile_overlap = updated_tiling(
            (self.config.tile, self.config.tile_overlap), tile, overlap
        )
        return self

    def to(self, device: str | torch.device) -> Detector:
        """Move the networks; on a GPU, convolution weights go channels-last (faster with
        cuDNN; the layout follows the weights, so inputs need no change)."""
        self.device_ = torch.device(device)
        for module in self.modules().values():
            module.to(self.device_)
            if self.device_.type == "cuda":
                module.to(memory_format=torch.channels_last)
        return self

    def save(self, directory: str | Path) -> Path:
        """Write the bundle (config.json + model.safetensors) to `directory`."""
        from adformer.deploy.bundle import save_bundle

        if self.categories_ is None:
            raise AdformerError(f"this {self.name} detector is not fitted: call fit() first")
        return save_bundle(self, directory)

    # ----------------------------------------------------------------- inference
    @torch.no_grad()
    def infer(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) in [0, 1] at the model's size → scores (B,), maps (B, S, S), float32
        tensors on the model's device. No thresholding, no file handling; needs the networks
        (fit, load or `build`), not a threshold."""
        if self.device_ is None:
            raise AdformerError(
                f"this {self.name} detector has no networks yet: call fit(), load() or build()"
            )
        for module in self.modules().values():
            module.eval()
        maps = self._maps(images.to(self.device_)).float()
        return self._scores(maps).float(), maps

    def graph(self) -> InferenceGraph:
        """`infer` as one module, for export: (B, 3, S, S) in [0, 1] → scores (B,), maps
        (B, S, S), with everything fitted (statistics, index tensors) inside it as constants."""
        self._check_fitted()
        return InferenceGraph(self, self._maps)

    def normalisation(self) -> dict | None:
        """The mean and std the networks apply to images in [0, 1] (inside; callers never
        normalise), or None when they take them as they are."""
        return None

    @torch.no_grad()
    def score_samples(
        self,
        samples: Sequence[Sample],
        *,
        skip_unreadable: bool = True,
        reconstructions: bool = False,
    ) -> Iterator[ScoredBatch]:
        """Score samples batch by batch (what the evaluator calls): an unreadable file is
        skipped with a warning, or with ``skip_unreadable=False`` raises naming it."""
        for module in self.modules().values():
            module.eval()
        tiled = self.config.tile is not None
        for batch in loader(
            samples,
            self.config.image_size,
            # tiled: one whole image at a time (its tiles are the batch), memory flat in size
            1 if tiled else self.config.inference_batch_size,
            skip_unreadable=skip_unreadable,
            whole=tiled,
        ):
            if batch is None:
                continue
            score = self._score_tiled if tiled else self._score_images
            yield ScoredBatch(batch, *score(batch.images, reconstructions))

    def _score_tiled(
        self, images: Iterable[Image.Image], reconstruct: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """`_score_images` for whole images of any size, tile by tile (`adformer.tiling`)."""
        reconstruct = reconstruct and self.reconstructs

        def run(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            _, maps, recon = self._score_images(torch.from_numpy(tiles), reconstruct)
            return maps, recon

        c = self.config
        results = [
            score_tiled(
                image,
                run,
                tile=c.tile,
                overlap=c.tile_overlap,
                size=c.image_size,
                score_pool=self.score_pool,
                batch_size=c.inference_batch_size,
                reconstruct=reconstruct,
            )
            for image in images
        ]
        scores = np.array([r[0] for r in results], np.float32)
        maps = np.stack([r[1] for r in results]).astype(np.float32)
        recons = np.stack([r[2] for r in results]) if reconstruct else None
        return scores, maps, recons

    def _score_images(
        self, images: torch.Tensor, reconstruct: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(B, 3, S, S) in [0, 1] → scores (B,), maps (B, S, S), reconstructions or None."""
        maps, *rest = self._outputs(images.to(self.device_), reconstruct and self.reconstructs)
        recon = None
        if rest:
            recon = rest[0].clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return self._scores(maps).float().cpu().numpy(), maps.float().cpu().numpy(), recon

    @torch.no_grad()
    def predict(
        self, images: Sequence[ImageInput] | ImageInput, reconstructions: bool = False
    ) -> Prediction:
        """Anomaly scores (N,) and maps (N, S, S) for image paths, folders, PIL images,
        HxWxC arrays or a (N, 3, H, W) tensor in [0, 1]. Unreadable files are skipped with a
        warning and listed in `Prediction.skipped`. With ``reconstructions=True`` a method that
        reconstructs (InTra) also returns its reconstructions.

        >>> result = detector.predict(["part1.png", "part2.png"])  # doctest: +SKIP
        >>> result.scores.shape, result.maps.shape
        ((2,), (2, 224, 224))
        """
        self._check_fitted()
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            images = list(images)
        found, in_memory = split_inputs(images)
        files = [Sample(p, "") for p in found]
        scores, maps, recons, paths = [], [], [], []
        for scored in self.score_samples(files, reconstructions=reconstructions):
            scores.append(scored.scores)
            maps.append(scored.maps)
            recons.append(scored.reconstructions)
            paths += scored.batch.paths
        skipped = sorted({str(s.path) for s in files} - set(paths))
        if in_memory and self.config.tile is not None:
            s, m, r = self._score_tiled([_to_image(i) for i in in_memory], reconstructions)
            scores.append(s)
            maps.append(m)
            recons.append(r)
            paths += [""] * len(in_memory)
        elif in_memory:
            size = self.config.image_size
            tensors = torch.stack([_to_tensor(i, size) for i in in_memory])
            for start in range(0, len(tensors), self.config.inference_batch_size):
                chunk = tensors[start : start + self.config.inference_batch_size]
                s, m, r = self._score_images(chunk, reconstructions)
                scores.append(s)
                maps.append(m)
                recons.append(r)
            paths += [""] * len(in_memory)
        size = self.config.image_size
        score_array = np.concatenate(scores) if scores else np.zeros(0, np.float32)
        map_array = np.concatenate(maps) if maps else np.zeros((0, size, size), np.float32)
        recon_array = None
        if recons and all(r is not None for r in recons):
            recon_array = np.concatenate(recons)
        return Prediction(
            score_array, map_array, score_array > self.threshold_, paths, skipped, recon_array
        )


class InferenceGraph(nn.Module):
    """A detector's inference as a module: images → (scores, maps), in eval mode. `maps`
    defaults to the detector's own; a method passes another where its training-time
    computation cannot be exported (and the `constants` that computation needs)."""

    def __init__(
        self,
        detector: Detector,
        maps: Callable[[torch.Tensor], torch.Tensor],
        constants: nn.Module | None = None,
    ):
        super().__init__()
        self.networks = nn.ModuleDict(detector.modules())
        self.constants = constants
        self._maps, self._scores = maps, detector._scores
        self.to(detector.device_ or "cpu").eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self._maps(images).float()
        return self._scores(maps).float(), maps


@dataclass
class _Split:
    """Training data of one fit: categories, fit/validation normals and anomalies."""

    categories: list[str]
    train: list[Sample] = dataclasses.field(default_factory=list)
    val: list[Sample] = dataclasses.field(default_factory=list)
    anomalies_fit: list[Sample] = dataclasses.field(default_factory=list)
    anomalies_val: list[Sample] = dataclasses.field(default_factory=list)


def _image_tensor(image: torch.Tensor) -> torch.Tensor:
    """An in-memory (3, H, W) or (1, H, W) tensor in [0, 1] as a float (3, H, W) one."""
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise AdformerError(f"expected a (3, H, W) tensor in [0, 1], got {tuple(image.shape)}")
    return image.expand(3, -1, -1).float()


def _to_tensor(image, size: int) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        return torch.nn.functional.interpolate(
            _image_tensor(image)[None], (size, size), mode="bilinear", align_corners=False
        )[0]
    return image_to_tensor(as_image(image), size)


def _to_image(image) -> Image.Image:
    """An in-memory image as RGB PIL at its own size (tiled prediction)."""
    if isinstance(image, torch.Tensor):
        image = _image_tensor(image).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return as_image(image)


def _as_categories(data) -> list[CategoryData]:
    if isinstance(data, CategoryData):
        return [data]
    if isinstance(data, (str, Path)):
        return load_root(data)
    if isinstance(data, (list, tuple)) and data:
        if all(isinstance(d, CategoryData) for d in data):
            return list(data)
        if all(isinstance(d, Sample) for d in data):
            by_category: dict[str, list[Sample]] = {}
            for s in data:
                by_category.setdefault(s.category, []).append(s)
            return [CategoryData(c, s, [], False) for c, s in by_category.items()]
        if all(isinstance(d, (str, Path)) for d in data):
            paths = list_images(data)
            if paths:
                return [CategoryData("images", [Sample(p, "images") for p in paths], [], False)]
            raise AdformerError("no training images found")
    raise AdformerError(
        "fit() takes a data root, CategoryData, a list of Samples or a list of image paths"
    )
