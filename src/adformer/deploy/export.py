"""ONNX export of a fitted run: one graph per model, from the preprocessed image batch to
``scores (B,)`` and ``maps (B, S, S)`` with a dynamic batch axis, and a JSON sidecar with
everything that is not weights (method, input size and transform, thresholds, the map's
colour scale, versions, each graph's SHA-256).

Every graph is checked against the PyTorch detector before the export is written: if
onnxruntime's scores or maps differ by more than `TOLERANCE`, the export fails instead of
shipping a model that scores differently from the one that was tested.

>>> export_onnx("runs/uniad", "exports/uniad")  # doctest: +SKIP
PosixPath('exports/uniad')
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from adformer.errors import AdformerError

SIDECAR = "adformer-onnx.json"
FORMAT = "adformer-onnx"
FORMAT_VERSION = 1
OPSET = 18  # Resize with antialias (InTra's downscaling) needs 18
INPUT = "images"
OUTPUTS = ("scores", "maps")
# relative: |Δscore| / |score|, and max |Δmap| / max |map| (a map is near 0 where normal)
TOLERANCE = {"scores": 1e-4, "maps": 1e-3}


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def deviation(reference: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray]):
    """Relative deviation of (scores, maps) from the reference, as `TOLERANCE` defines it."""
    (s0, m0), (s1, m1) = reference, other
    scores = float(np.max(np.abs(s1 - s0) / np.maximum(np.abs(s0), 1e-12)))
    maps = float(np.max(np.abs(m1 - m0)) / max(float(np.max(np.abs(m0))), 1e-12))
    return {"scores": scores, "maps": maps}


def export_onnx(
    run,
    out: str | Path,
    *,
    threshold: float | None = None,
    opset: int = OPSET,
) -> Path:
    """Export every model of `run` (a run directory or `Run`) to `out`: ``model.onnx``, or
    ``<category>.onnx`` per category for a run with one model per category, and
    ``adformer-onnx.json``. `threshold` replaces the fitted one in the sidecar (it stays a
    setting: edit the sidecar or pass ``threshold=`` to the runtime)."""
    from adformer import __version__
    from adformer.runs import Run

    run = run if isinstance(run, Run) else Run.open(run)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / SIDECAR).is_file():
        raise AdformerError(f"{out} exists and is not an adformer export: choose an empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        traced: dict[str, object] = {}  # each configuration's graph, traced once
        models = [_export_model(run, key, staging, threshold, opset, traced) for key in run.bundles]
        detector = run.detector(next(iter(run.bundles)), "cpu")
        size = detector.config.image_size
        sidecar = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "adformer_version": __version__,
            "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source": str(run.directory),
            "method": detector.name,
            "learning_type": detector.learning_type,
            "image_size": size,
            "input": {
                "name": INPUT,
                "shape": ["batch", 3, size, size],
                "dtype": "float32",
                "transform": "RGB, resized bilinearly (PIL) to image_size, scaled to [0, 1]",
            },
            "normalisation": detector.normalisation(),  # applied inside the graph
            # large images: tiles of `tile` pixels, stitched, scored (adformer.tiling)
            "tiling": {
                "tile": detector.config.tile,
                "overlap": detector.config.tile_overlap,
                "score_pool": detector.score_pool,
            },
            "outputs": {"scores": ["batch"], "maps": ["batch", size, size]},
            "opset": opset,
            "map_colour_scale": "map_low (blue) to the threshold (red)",
            "tolerance": TOLERANCE,
            "models": models,
        }
        (staging / SIDECAR).write_text(json.dumps(sidecar, indent=2))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)  # complete or absent: never a half-written export
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _export_model(
    run, key: str | None, folder: Path, threshold: float | None, opset: int, traced: dict
):
    """One model of the run as ``folder/<name>.onnx``, and its entry in the sidecar."""
    detector = run.detector(key, "cpu")
    name = key or "model"
    path = folder / f"{name}.onnx"
    checked = _export_graph(detector, path, opset, traced)
    return {
        "name": name,
        "file": path.name,
        "sha256": sha256(path),
        "categories": detector.default_test_categories(),
        "threshold": detector.threshold_ if threshold is None else float(threshold),
        "threshold_source": detector.threshold_source_ if threshold is None else "set at export",
        "map_low": detector.map_low_,
        "checked": checked,
    }


def _export_graph(detector, path: Path, opset: int, traced: dict) -> dict:
    """The detector's `graph()` as one self-contained ONNX file, checked with onnxruntime at
    batch 1 and 3 against the PyTorch detector; returns the deviations.

    `traced` holds the graphs traced so far, by configuration: a model whose configuration
    was traced before (the categories of a run with one model per category) takes that graph
    with its own weights, checked the same way, instead of tracing again (most of an export's
    time); it is traced afresh if the check fails (something of its own is not a weight)."""
    from adformer.engine import fingerprint_of

    key = fingerprint_of(dataclasses.asdict(detector.config))
    if key in traced:
        try:
            _apply_weights(traced[key], detector)
            _save_optimised(traced[key], path)
            return check_graph(detector, path)
        except AdformerError:
            pass
    traced[key] = _trace(detector, opset)
    _save_optimised(traced[key], path)
    return check_graph(detector, path)


def _trace(detector, opset: int):
    """The detector's `graph()` traced to an unoptimised `torch.onnx.ONNXProgram`, whose
    initializers keep the names of the graph's weights."""
    import torch

    graph = detector.graph()
    size = detector.config.image_size
    example = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=65_536)
    try:
        with _out_of_place(graph):
            return torch.onnx.export(
                graph,
                (example,),
                dynamo=True,
                input_names=[INPUT],
                output_names=list(OUTPUTS),
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                optimize=False,
                verbose=False,
            )
    except Exception as error:  # the exporter's own errors are many and deep
        raise AdformerError(f"ONNX export of the {detector.name} graph failed: {error}") from error


def _apply_weights(program, detector) -> None:
    """The detector's weights put in place of those `program` was traced with."""
    initializers = program.model.graph.initializers
    weights = {k: v for k, v in detector.graph().state_dict().items() if k in initializers}
    if any(tuple(initializers[k].shape) != tuple(v.shape) for k, v in weights.items()):
        raise AdformerError("weights of other shapes")
    program.apply_weights(weights)


def _save_optimised(program, path: Path) -> None:
    """A constant-folded copy of `program` (`ONNXProgram.optimize`, as `torch.onnx.export`
    does by default) saved as one file, weights inside; `program` stays as traced."""
    import torch
    from onnxscript import ir

    copy = torch.onnx.ONNXProgram(ir.from_proto(ir.to_proto(program.model)), None)
    copy.optimize()
    copy.save(str(path), external_data=False)


@contextlib.contextmanager
def _out_of_place(graph):
    """The graph's in-place activations (EfficientNet-Lite's ReLU6 in timm) made out-of-place
    while it is traced, then restored: the same values, and with a dynamic batch axis the
    exporter's decompositions take a fraction of the time (a 60-layer conv/ReLU6 stack:
    2.7 s instead of 14.8 s on 2 CPU cores; the tiny UniAD's export 21 s -> 15 s)."""
    modules = [m for m in graph.modules() if getattr(m, "inplace", None) is True]
    for module in modules:
        module.inplace = False
    try:
        yield
    finally:
        for module in modules:
            module.inplace = True


def check_graph(detector, path: Path, batches: tuple[int, ...] = (1, 3)) -> dict:
    """Largest deviation of onnxruntime from `detector.infer` over random batches; raises if
    beyond `TOLERANCE`."""
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    size = detector.config.image_size
    worst = {"scores": 0.0, "maps": 0.0}
    generator = torch.Generator().manual_seed(1)
    for count in batches:
        images = torch.rand(count, 3, size, size, generator=generator)
        reference = tuple(t.cpu().numpy() for t in detector.infer(images))
        found = deviation(reference, tuple(session.run(list(OUTPUTS), {INPUT: images.numpy()})))
        worst = {k: max(worst[k], found[k]) for k in worst}
    if any(worst[k] > TOLERANCE[k] for k in worst):
        raise AdformerError(
            f"the ONNX graph of {detector.name} does not reproduce PyTorch (relative deviation "
            f"{worst}, tolerance {TOLERANCE}); not exported"
        )
    return worst
