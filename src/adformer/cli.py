"""The command line: parses arguments and calls the API. Heavy imports happen per command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from adformer import distributed  # light: imports torch only under torchrun
from adformer.data.layouts import LAYOUTS  # light: NumPy and Pillow
from adformer.deploy.models import BACKENDS  # light, as errors: no torch
from adformer.errors import AdformerError

LAYOUT_HELP = "data layout (mvtec also for MPDD); detected when unambiguous"
PRESET_HELP = "paper (default), cpu (2 CPU cores), gpu (one GPU) or tiny (smoke runs)"
BACKEND_HELP = "auto: onnx for an export, torch for a run"


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _image_size(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected pixels or 'auto', got {text!r}") from None


def _options(args: argparse.Namespace) -> dict:
    """The model options a command was given: `fit`'s flags that were set (or the subset
    another command has), then each ``--set KEY=VALUE``, where ``null`` sets None."""
    flags = ["backbone", "backbone_weights", "image_size", "epochs", "seed"]
    flags += ["synthetic_anomalies", "precision", "tile", "tile_overlap"]
    options = {k: getattr(args, k) for k in flags if getattr(args, k, None) is not None}
    if getattr(args, "compile", False):
        options["compile"] = True
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise AdformerError(f"--set expects KEY=VALUE, got '{item}'")
        options[key.replace("-", "_")] = _parse_value(value)
    return options


def _describe(detector, where: Path) -> str:
    result, config = detector.train_result_, detector.config
    planned, capped = result.epochs_planned, ""
    if planned < config.epochs:
        capped = f" (max_steps={config.max_steps} a category allows {planned} of {config.epochs})"
    return (
        f"fitted {detector.name} on {', '.join(detector.categories_)}: best epoch "
        f"{result.best_epoch + 1}/{result.epochs_run}{capped}, {_decided(detector)}; bundle in "
        f"{where}"
    )


def _decided(detector) -> str:
    """The threshold and the validation `fit` or `calibrate` set."""
    threshold = detector.threshold_
    decision = (
        f"threshold {threshold:.4g} ({detector.threshold_source_})"
        if threshold is not None
        else "no threshold until adapted to a category (adformer adapt)"
    )
    validation, checked = detector.validation_, ""
    if validation:
        adapted = (  # a few-shot fit: adapted to k images of each training category
            f" (each training category, adapted to {validation['shots']} of its images)"
            if "shots" in validation
            else ""
        )
        checked = _checked(validation, "held-out good", adapted)
    return decision + checked


def _checked(validation: dict, against: str, adapted: str = "") -> str:
    """A validation's AUROCs as `fit`, `calibrate` and `adapt` print them: `against` (the good
    images) vs synthetic defects, and vs labelled defects where the user gave some."""
    checked = f"; {against} vs synthetic defects{adapted}: {_aurocs(validation)}"
    if "labelled" in validation:
        labelled = validation["labelled"]
        checked += f"; vs {labelled['n_defect']} labelled defects: {_aurocs(labelled)}"
    return checked


def _aurocs(validation: dict) -> str:
    pixel = validation.get("pixel_auroc")  # labelled defects without masks have none
    return f"image AUROC {validation['image_auroc']:.3f}" + (
        "" if pixel is None else f", pixel AUROC {pixel:.3f}"
    )


def _set_tiling(model, args: argparse.Namespace):
    """`--tile` / `--tile-overlap` of `test` and `predict`: override the fitted tiling."""
    if args.tile is not None or args.tile_overlap is not None:
        model.set_tiling(args.tile, args.tile_overlap)
    return model


def _add_tiling(parser: argparse.ArgumentParser, when: str) -> None:
    parser.add_argument(
        "--tile", type=int, metavar="PX", help=f"large images as tiles of PX pixels ({when})"
    )
    parser.add_argument(
        "--tile-overlap", type=int, metavar="PX", help="pixels shared by neighbouring tiles"
    )


def cmd_fit(args: argparse.Namespace) -> int:
    import adformer

    run = adformer.fit(
        args.method,
        args.data,
        args.out,
        categories=args.category,
        exclude=args.exclude or (),
        anomalies=args.anomalies,
        preset=args.preset,
        layout=args.layout,
        resume=args.resume,
        device=args.device,
        checkpoint_every=args.checkpoint_every,
        **_options(args),
    )
    if distributed.is_main():  # under torchrun, one report
        for category, bundle in run.bundles.items():
            print(_describe(run.detector(category), bundle))
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    import adformer
    from adformer.evaluation.evaluate import save_metrics, table

    if args.shots:
        return _few_shot_test(args)
    run = adformer.Run.open(args.run)
    if args.tile is not None or args.tile_overlap is not None:
        for key in run.bundles:
            _set_tiling(run.detector(key, args.device), args)
    metrics = run.test(
        args.data, args.category, report=args.report, device=args.device, layout=args.layout
    ).metrics
    print(table(metrics))
    if args.report:
        print(f"report written to {Path(args.report) / 'index.html'}")
    if args.json:
        print(f"metrics written to {save_metrics(metrics, args.json)}")
    return 0


def _few_shot_test(args: argparse.Namespace) -> int:
    """`test --shots K --rounds R`: R seeded support sets per new category."""
    import adformer
    from adformer.data import load_root
    from adformer.evaluation.evaluate import save_metrics, table
    from adformer.evaluation.few_shot import evaluate_few_shot

    if not args.category or args.report:
        raise AdformerError("--shots needs --category (the new categories) and takes no --report")
    detector = _set_tiling(adformer.load(args.run, args.device), args)
    categories = load_root(args.data, args.category, args.layout)
    metrics = evaluate_few_shot(detector, categories, args.shots, args.rounds, args.seed)
    print(table(metrics))
    print(f"mean over {metrics['rounds']} support sets of {args.shots} images (*_std: spread)")
    if args.json:
        print(f"metrics written to {save_metrics(metrics, args.json)}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import adformer

    run = adformer.Run.open(args.run)
    calibrated = run.calibrate(
        args.data,
        args.out,
        anomalies=args.anomalies,
        layout=args.layout,
        device=args.device,
        **_options(args),
    )
    for key, bundle in calibrated.bundles.items():
        detector = calibrated.detector(key)
        categories = ", ".join(detector.categories_)
        print(
            f"calibrated {detector.name} on {categories}: {_decided(detector)}; bundle in {bundle}"
        )
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    import adformer
    from adformer.evaluation.few_shot import adapt

    detector = adformer.load(args.run, args.device)
    adapt(
        detector,
        args.data,
        args.shots,
        category=args.category,
        seed=args.seed,
        anomalies=args.anomalies,
    )
    detector.save(args.out)
    adapted, validation, checked = detector.adapted_, detector.validation_, ""
    if validation:
        against = (
            "each support image held out in turn"
            if "folds" in validation
            else "the other good images"
        )
        checked = _checked(validation, against)
    print(
        f"adapted to {adapted['category']} from {adapted['shots']} images; threshold "
        f"{detector.threshold_:.4g} ({detector.threshold_source_}){checked}; bundle in {args.out}"
    )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from adformer.deploy.models import open_models
    from adformer.evaluation.predictions import write_predictions

    model = open_models(args.run, args.backend, args.device).model(args.category)
    _set_tiling(model, args)
    summary = write_predictions(model, args.images, args.out, progress=True)
    if distributed.is_main():  # under torchrun, one report
        for path in summary.skipped:
            print(f"skipped unreadable image: {path}", file=sys.stderr)
        print(f"{summary.scored} images, {summary.flagged} above the threshold; in {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from adformer.deploy.export import export_onnx

    out = export_onnx(args.run, args.out, threshold=args.threshold)
    print(f"exported {args.run} to {out} (ONNX checked against PyTorch; sidecar in {out})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from adformer.deploy.service import serve

    serve(
        args.source,
        host=args.host,
        port=args.port,
        workers=args.workers,
        backend=args.backend,
        max_upload_mb=args.max_upload_mb,
    )
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from adformer.benchmark import run_benchmark

    results = run_benchmark(
        args.data,
        args.methods,
        args.out,
        categories=args.categories,
        seeds=args.seeds,
        peers=args.peers or (),
        preset=args.preset,
        layout=args.layout,
        shots=args.shots,
        rounds=args.rounds,
        max_train=args.max_train,
        labelled_validation=args.labelled_validation,
        progress=True,
        **_options(args),
    )
    print(results.read_text())
    print(f"written to {results} and {results.with_suffix('.csv')}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from adformer.demo import run_demo

    run_demo(Path(args.out), device=args.device)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adformer", description="Transformer anomaly detection: fit, test, predict."
    )
    from adformer import __version__

    parser.add_argument("--version", action="version", version=f"adformer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser("fit", help="train a detector on good images")
    fit.add_argument("--method", required=True, help="intra, uniad, adtr or regad")
    fit.add_argument("--data", required=True, help="a data root, 'elpv' or 'synthetic'")
    fit.add_argument("--category", nargs="+", help="categories, or 'all' (default)")
    fit.add_argument("--layout", choices=LAYOUTS, help=LAYOUT_HELP)
    fit.add_argument("--out", required=True, help="run directory: checkpoint and bundle")
    fit.add_argument("--preset", default=None, help=PRESET_HELP)
    fit.add_argument("--backbone")
    fit.add_argument("--backbone-weights", help="a .safetensors/.pth file of ImageNet weights")
    fit.add_argument("--image-size", type=_image_size, help="pixels, or 'auto' (InTra)")
    fit.add_argument("--epochs", type=int)
    fit.add_argument("--seed", type=int)
    fit.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config option")
    fit.add_argument(
        "--anomalies",
        help="labelled defects, DIR/CAT/test/<defect>/...: ADTR+ learns from them, the other "
        "one-class methods set the threshold and validate on them",
    )
    fit.add_argument(
        "--synthetic-anomalies", type=int, metavar="N", help="N painted defects (ADTR+)"
    )
    _add_tiling(fit, "default: whole images")
    fit.add_argument("--exclude", nargs="+", help="categories never trained on (RegAD)")
    fit.add_argument("--resume", action="store_true", help="continue from RUN's last checkpoint")
    fit.add_argument(
        "--checkpoint-every",
        type=float,
        metavar="SECONDS",
        help="write the checkpoint at most this often, and after the last epoch (default 60; "
        "0: every epoch)",
    )
    fit.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="training arithmetic (default: the preset's, mostly auto: bf16 on a GPU or a CPU "
        "with bf16 instructions, else fp32)",
    )
    fit.add_argument("--compile", action="store_true", help="torch.compile the trained network")
    fit.add_argument("--device", help="cuda, cuda:1, mps or cpu (default: best available)")
    fit.set_defaults(func=cmd_fit)

    test = commands.add_parser("test", help="evaluate a bundle on test images")
    test.add_argument("run")
    test.add_argument("--data", required=True)
    test.add_argument("--category", nargs="+", help="default: the categories it was fitted on")
    test.add_argument("--layout", choices=LAYOUTS, help=LAYOUT_HELP)
    test.add_argument("--json", help="write the metrics here")
    test.add_argument("--report", help="write an HTML report (curves, examples) into this folder")
    test.add_argument("--shots", type=int, help="few-shot (RegAD): support images per round")
    test.add_argument("--rounds", type=int, help="few-shot: support sets drawn (default 10)")
    test.add_argument("--seed", type=int, default=0, help="few-shot: seed of the support sets")
    test.add_argument("--device")
    _add_tiling(test, "default: as fitted; 0: whole images")
    test.set_defaults(func=cmd_test)

    calibrate = commands.add_parser(
        "calibrate", help="threshold and validation again after a scoring change, no training"
    )
    calibrate.add_argument("run")
    calibrate.add_argument("--data", required=True, help="the data root the run was fitted on")
    calibrate.add_argument("--layout", choices=LAYOUTS, help=LAYOUT_HELP)
    calibrate.add_argument("--anomalies", help="labelled defects, as fit takes them")
    calibrate.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="an option that changes no training (score_pool, threshold_quantile; RegAD: "
        "scoring, feature_pool, channels, covariance_eps, covariance, blur_sigma, support_views)",
    )
    calibrate.add_argument(
        "--out", required=True, help="where the calibrated run goes (RUN itself to replace it)"
    )
    calibrate.add_argument("--device")
    calibrate.set_defaults(func=cmd_calibrate)

    adapt = commands.add_parser("adapt", help="few-shot: fit a RegAD model to a new category")
    adapt.add_argument("run")
    adapt.add_argument("--data", required=True, help="a data root (with --category) or a folder")
    adapt.add_argument("--category", help="the new category in a data root")
    adapt.add_argument("--shots", type=int, required=True)
    adapt.add_argument("--out", required=True)
    adapt.add_argument("--seed", type=int, default=0)
    adapt.add_argument(
        "--anomalies",
        help="labelled defects of the new category (a folder of defective images, or "
        "DIR/CAT/test/<defect>/ with masks as fit takes them), never adapted on: the threshold "
        "and the validation weigh them",
    )
    adapt.add_argument("--device")
    adapt.set_defaults(func=cmd_adapt)

    predict = commands.add_parser("predict", help="score images, write heat-map overlays")
    predict.add_argument("run", metavar="RUN_OR_EXPORT")
    predict.add_argument("images", nargs="+", help="image files or folders")
    predict.add_argument("--out", required=True)
    predict.add_argument("--category", help="which model of a per-category run")
    predict.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)
    predict.add_argument("--device", help="torch backend: cuda, mps or cpu")
    _add_tiling(predict, "default: as fitted; 0: whole images")
    predict.set_defaults(func=cmd_predict)

    export = commands.add_parser("export", help="export a run to ONNX (+ a JSON sidecar)")
    export.add_argument("run")
    export.add_argument("--format", default="onnx", choices=["onnx"])
    export.add_argument("--out", required=True, help="the export folder")
    export.add_argument("--threshold", type=float, help="replace the fitted threshold")
    export.set_defaults(func=cmd_export)

    serve = commands.add_parser("serve", help="HTTP service and page over a run or an export")
    serve.add_argument("source", metavar="RUN_OR_EXPORT")
    serve.add_argument("--host", default="127.0.0.1", help="default: this machine only")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="processes, each with the model")
    serve.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)
    serve.add_argument("--max-upload-mb", type=float, default=20.0, help="per request")
    serve.set_defaults(func=cmd_serve)

    bench = commands.add_parser("benchmark", help="methods and peers over seeds, one table")
    bench.add_argument("--data", required=True, help="a data root, 'elpv' or 'synthetic'")
    bench.add_argument("--methods", nargs="+", required=True)
    bench.add_argument("--categories", nargs="+", help="default: all")
    bench.add_argument("--seeds", nargs="+", type=int, default=[0])
    bench.add_argument("--peers", nargs="*", help="padim patchcore (pip install 'adformer[peers]')")
    bench.add_argument("--preset", default=None, help=PRESET_HELP)
    bench.add_argument("--layout", choices=LAYOUTS, help=LAYOUT_HELP)
    bench.add_argument("--shots", type=int, default=4, help="few-shot methods: k support images")
    bench.add_argument("--rounds", type=int, default=5, help="few-shot: support sets per category")
    bench.add_argument(
        "--max-train", type=int, metavar="N", help="at most N good training images per category"
    )
    bench.add_argument(
        "--labelled-validation",
        type=int,
        default=0,
        metavar="N",
        help="ELPV: N defective cells per category out of the test set, to validate on",
    )
    bench.add_argument("--out", required=True, help="the grid's folder (rerun to resume)")
    bench.add_argument("--backbone")
    bench.add_argument("--image-size", type=_image_size)
    bench.add_argument("--epochs", type=int)
    _add_tiling(bench, "default: whole images")
    bench.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config option")
    bench.set_defaults(func=cmd_benchmark)

    demo = commands.add_parser("demo", help="offline demo: unified UniAD on ELPV solar cells")
    demo.add_argument("--out", default="demo_out")
    demo.add_argument("--device")
    demo.set_defaults(func=cmd_demo)
    return parser


DISTRIBUTED = ("fit", "predict")  # the commands torchrun can launch on several processes


# which extra brings a module a command may lack (the core is the torch-free runtime's)
EXTRAS = {
    **dict.fromkeys(["torch", "torchvision", "timm", "kornia", "scipy", "sklearn"], "train"),
    **dict.fromkeys(["safetensors", "tqdm", "huggingface_hub"], "train"),
    **dict.fromkeys(["onnx", "onnxscript"], "export"),
    **dict.fromkeys(["fastapi", "uvicorn", "multipart", "starlette"], "serve"),
    "onnxruntime": "runtime",
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in DISTRIBUTED and distributed.launched():
            distributed.init()
            try:
                return args.func(args)
            finally:
                distributed.shutdown()
        return args.func(args)
    except AdformerError as error:
        print(f"adformer: error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        extra = EXTRAS.get((error.name or "").partition(".")[0])
        if extra is None:
            raise
        print(
            f"adformer: error: '{args.command}' needs {error.name}, which is not installed: "
            f"pip install 'adformer[{extra}]'",
            file=sys.stderr,
        )
        return 2
