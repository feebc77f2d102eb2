"""Model bundles: a directory with ``config.json`` and ``model.safetensors`` (never pickle),
loadable without the training data or the network."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from adformer.errors import AdformerError

FORMAT = "adformer-bundle"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_bundle(detector, directory: str | Path) -> Path:
    from safetensors.torch import save_file

    from adformer import __version__

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for prefix, module in detector.modules().items():
        for key, value in module.state_dict().items():
            tensors[f"{prefix}.{key}"] = value.detach().cpu().contiguous()
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "adformer_version": __version__,
        "method": detector.name,
        "config": dataclasses.asdict(detector.config),
        "state": detector.fitted_state(),
    }
    # written beside the bundle, then moved into place: a full disk (or any failed write)
    # leaves the previous bundle, if any, as it was
    staging = directory.with_name(f".{directory.name}.saving")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        save_file(tensors, str(staging / WEIGHTS_FILE))
        (staging / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        for name in (WEIGHTS_FILE, CONFIG_FILE):  # config last: with it, the bundle is complete
            os.replace(staging / name, directory / name)
    except OSError as error:
        raise AdformerError(
            f"cannot save the bundle to {directory} ({error.strerror or error}); what was "
            "there is unchanged"
        ) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


RUNS_FILE = "runs.json"


def save_runs_index(directory: str | Path, method: str, categories: list[str]) -> None:
    """Mark `directory` as holding one bundle per category (``directory/<category>/``)."""
    index = {"format": "adformer-runs", "method": method, "categories": categories}
    (Path(directory) / RUNS_FILE).write_text(json.dumps(index, indent=2))


def read_run(directory: str | Path) -> tuple[str, dict[str | None, Path]]:
    """(method, {category: bundle dir}) of a per-category run, or (method, {None: directory})
    for one bundle."""
    directory = Path(directory)
    index = directory / RUNS_FILE
    if not index.is_file():
        return read_meta(directory)["method"], {None: directory}  # a clear error if not a bundle
    runs = json.loads(index.read_text())
    return runs["method"], {c: directory / c for c in runs["categories"]}


def read_meta(directory: str | Path) -> dict:
    return read_format(
        Path(directory) / CONFIG_FILE,
        FORMAT,
        FORMAT_VERSION,
        "an adformer bundle",
        "Re-export it with a matching version or retrain.",
    )


def read_format(path: Path, form: str, version: int, what: str, remedy: str) -> dict:
    """A versioned JSON file (a bundle's config, an export's sidecar), checked: it exists,
    parses, is `form` and of `version`; else `AdformerError` saying which and what to do."""
    if not path.is_file():
        raise AdformerError(f"{path.parent} is not {what} (no {path.name})")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise AdformerError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(meta, dict) or meta.get("format") != form:
        raise AdformerError(f"{path.parent} is not {what}")
    if meta.get("format_version") != version:
        raise AdformerError(
            f"{path.parent} is format {meta.get('format_version')} (written by adformer "
            f"{meta.get('adformer_version')}); this adformer reads format {version}. {remedy}"
        )
    return meta


def load_bundle(directory: str | Path, device=None):
    """A fitted detector from a bundle directory.

    >>> detector = adformer.load("runs/uniad")  # doctest: +SKIP
    """
    from safetensors.torch import load_file

    from adformer.engine import choose_device
    from adformer.methods.registry import get

    directory = Path(directory)
    meta = read_meta(directory)
    config = dict(meta["config"])
    if "amp" in config:  # bundles of adformer ≤ 0.1.0 (before --precision)
        config["precision"] = "auto" if config.pop("amp") else "fp32"
    try:
        detector = get(meta["method"]).restore(config, meta["state"])
    except (AdformerError, KeyError, TypeError) as error:
        raise AdformerError(f"{directory / CONFIG_FILE}: {error}") from error
    try:
        tensors = load_file(str(directory / WEIGHTS_FILE))
    except Exception as error:  # safetensors' own error type for a damaged header
        raise AdformerError(f"{directory / WEIGHTS_FILE} is damaged: {error}") from error
    for prefix, module in detector.modules().items():
        own = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        try:
            module.load_state_dict(own)
        except RuntimeError as error:
            raise AdformerError(f"{directory}: weights do not match the config: {error}") from error
    return detector.to(choose_device(device))
