"""The command line: parses arguments and calls the API. Heavy imports happen per command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from adformer.errors import AdformerError  # light: no torch

CHUNK = 64  # images predicted at a time by `adformer predict`


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
    options = {
        "backbone": args.backbone,
        "backbone_weights": args.backbone_weights,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "seed": args.seed,
        "synthetic_anomalies": args.synthetic_anomalies,
    }
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise AdformerError(f"--set expects KEY=VALUE, got '{item}'")
        options[key.replace("-", "_")] = _parse_value(value)
    return options


def cmd_fit(args: argparse.Namespace) -> int:
    import adformer
    from adformer.data import load_root
    from adformer.data.folders import load_anomalies
    from adformer.deploy.bundle import save_runs_index
    from adformer.methods.registry import get

    categories = load_root(args.data, args.category)
    if args.exclude:  # RegAD's leave-one-out: the target category is never trained on
        missing = sorted(set(args.exclude) - {c.name for c in categories})
        if missing:
            raise AdformerError(f"--exclude: {args.data} has no categories {missing}")
        categories = [c for c in categories if c.name not in args.exclude]
        if not categories:
            raise AdformerError("--exclude leaves no category to train on")
    if args.anomalies:
        pools = load_anomalies(args.anomalies, [c.name for c in categories])
        for category in categories:
            category.anomalies = pools.get(category.name, [])
    options = _options(args)
    adformer.create(args.method, args.preset, **options)._check_config()  # before any work
    # per-category methods (ADTR) train one model per category unless --category names a set
    separate = get(args.method).one_model_per_category and not args.category
    groups = [[c] for c in categories] if separate and len(categories) > 1 else [categories]
    for group in groups:
        out = Path(args.out) / group[0].name if len(groups) > 1 else Path(args.out)
        detector = adformer.create(args.method, args.preset, **options)
        detector.fit(group, run_dir=out, resume=args.resume, device=args.device)
        detector.save(out)
        result = detector.train_result_
        threshold = detector.threshold_
        print(
            f"fitted {args.method} on {', '.join(detector.categories_)}: best epoch "
            f"{result.best_epoch + 1}/{result.epochs_run}, threshold "
            f"{'-' if threshold is None else f'{threshold:.4g}'} ({detector.threshold_source_}); "
            f"bundle in {out}"
        )
    if len(groups) > 1:
        save_runs_index(args.out, args.method, [c.name for c in categories])
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    import adformer
    from adformer.data import load_root
    from adformer.deploy.bundle import bundles
    from adformer.evaluation.evaluate import evaluate, merge, table

    if args.shots:
        return _few_shot_test(args)
    evaluations, detectors = [], {}
    for category, bundle in bundles(args.run).items():
        if category is not None and args.category and category not in args.category:
            continue
        detector = adformer.load(bundle, args.device)
        names = [category] if category is not None else args.category
        names = names or detector.default_test_categories()
        evaluations.append(evaluate(detector, load_root(args.data, names)))
        detectors.update(dict.fromkeys(evaluations[-1].metrics["per_category"], detector))
    if not evaluations:
        raise AdformerError(f"{args.run} has no model for categories {args.category}")
    merged = merge(evaluations)
    metrics = merged.metrics
    print(table(metrics))
    if args.report:
        from adformer.evaluation.report import write_report

        print(f"report written to {write_report(args.report, merged, detectors)}")
    _write_json(args.json, metrics)
    return 0


def _write_json(path: str | None, metrics: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(metrics, indent=2))
        print(f"metrics written to {path}")


def _few_shot_test(args: argparse.Namespace) -> int:
    """`test --shots K --rounds R`: adapt to R seeded support sets per category (RegAD)."""
    import adformer
    from adformer.data import load_root
    from adformer.evaluation.evaluate import average, merge, table

    detector = adformer.load(args.run, args.device)
    if not hasattr(detector, "adapt"):
        raise AdformerError(f"--shots is for few-shot methods (regad), not {detector.name}")
    if not args.category:
        raise AdformerError("--shots needs --category: the new categories to adapt to")
    from adformer.methods.regad import few_shot_evaluate

    rounds = args.rounds or detector.config.rounds
    per_category = [
        few_shot_evaluate(detector, category, args.shots, rounds, args.seed)
        for category in load_root(args.data, args.category)
    ]
    metrics = average([merge(list(round_)) for round_ in zip(*per_category, strict=True)])
    metrics |= {"shots": args.shots, "rounds": rounds}
    print(table(metrics))
    print(f"mean over {rounds} support sets of {args.shots} images; *_std keys hold the spread")
    _write_json(args.json, metrics)
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    import numpy as np

    import adformer
    from adformer.data import load_root
    from adformer.data.images import list_images
    from adformer.data.types import Sample

    detector = adformer.load(args.run, args.device)
    if not hasattr(detector, "adapt"):
        raise AdformerError(f"adapt is for few-shot methods (regad), not {detector.name}")
    if args.category:
        (category,) = load_root(args.data, [args.category])
        good, name = category.train, category.name
    else:  # a plain folder of good images of the new product
        name = Path(args.data).name
        good = [Sample(p, name) for p in list_images([args.data])]
    if len(good) < args.shots:
        raise AdformerError(f"{args.data} has {len(good)} good images, fewer than {args.shots}")
    order = np.random.default_rng(args.seed).permutation(len(good))
    support = [good[i] for i in order[: args.shots]]
    normals = [good[i] for i in order[args.shots : args.shots + detector.config.val_max]]
    detector.adapt(support, normals, name).save(args.out)
    print(
        f"adapted to {name} from {len(support)} images; threshold {detector.threshold_:.4g} "
        f"({detector.threshold_source_}); bundle in {args.out}"
    )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import csv

    import adformer
    from adformer.data.images import list_images, read_image
    from adformer.deploy.bundle import bundles
    from adformer.evaluation.visualize import example_grid, overlay

    runs = bundles(args.run)
    if None in runs:
        bundle = runs[None]
    elif args.category in runs:
        bundle = runs[args.category]
    else:
        raise AdformerError(
            f"{args.run} holds one model per category: choose one with --category "
            f"({', '.join(runs)})"
        )
    detector = adformer.load(bundle, args.device)
    paths = list_images(args.images)
    # overlay names keep the folder structure below the inputs' common folder, so
    # good/000.png and crack/000.png do not overwrite each other
    base = Path(os.path.commonpath([p.parent for p in paths])) if paths else Path()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scored = flagged = 0
    with open(out / "scores.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        # methods that reconstruct (InTra) also get a panel: image | reconstruction | map | overlay
        writer.writerow(["path", "score", "anomalous", "threshold", "overlay", "panel"])
        low, high = detector.map_low_, detector.threshold_
        for start in range(0, len(paths), CHUNK):  # bounded memory for large folders
            prediction = detector.predict(paths[start : start + CHUNK], reconstructions=True)
            recons = prediction.reconstructions
            for i, (path, score, flag, amap) in enumerate(
                zip(
                    prediction.paths,
                    prediction.scores,
                    prediction.anomalous,
                    prediction.maps,
                    strict=True,
                )
            ):
                stem = "__".join(Path(path).relative_to(base).with_suffix("").parts)
                image = read_image(path)
                target = out / f"{stem}_overlay.png"
                overlay(image, amap, low, high).save(target)
                panel = ""
                if recons is not None:
                    panel = f"{stem}_panel.png"
                    caption = f"score {score:.4g} (threshold {high:.4g})"
                    example_grid([(image, amap, caption, recons[i])], low, high).save(out / panel)
                writer.writerow(
                    [path, f"{score:.6g}", int(flag), f"{high:.6g}", target.name, panel]
                )
            for path in prediction.skipped:
                print(f"skipped unreadable image: {path}", file=sys.stderr)
            scored += len(prediction.scores)
            flagged += int(prediction.anomalous.sum())
    print(f"{scored} images, {flagged} above the threshold; written to {out}")
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
    fit.add_argument("--data", required=True, help="data root (MVTec AD layout) or 'elpv'")
    fit.add_argument("--category", nargs="+", help="categories, or 'all' (default)")
    fit.add_argument("--out", required=True, help="run directory: checkpoint and bundle")
    fit.add_argument("--preset", default=None, help="cpu or paper (default: paper)")
    fit.add_argument("--backbone")
    fit.add_argument("--backbone-weights", help="a .safetensors/.pth file of ImageNet weights")
    fit.add_argument("--image-size", type=_image_size, help="pixels, or 'auto' (InTra)")
    fit.add_argument("--epochs", type=int)
    fit.add_argument("--seed", type=int)
    fit.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config option")
    fit.add_argument(
        "--anomalies", help="labelled defects to learn from (ADTR+): DIR/CAT/test/<defect>/..."
    )
    fit.add_argument(
        "--synthetic-anomalies", type=int, metavar="N", help="N painted defects (ADTR+)"
    )
    fit.add_argument("--exclude", nargs="+", help="categories never trained on (RegAD)")
    fit.add_argument("--resume", action="store_true", help="continue from RUN's last checkpoint")
    fit.add_argument("--device", help="cuda, cuda:1, mps or cpu (default: best available)")
    fit.set_defaults(func=cmd_fit)

    test = commands.add_parser("test", help="evaluate a bundle on test images")
    test.add_argument("run")
    test.add_argument("--data", required=True)
    test.add_argument("--category", nargs="+", help="default: the categories it was fitted on")
    test.add_argument("--json", help="write the metrics here")
    test.add_argument("--report", help="write an HTML report (curves, examples) into this folder")
    test.add_argument("--shots", type=int, help="few-shot (RegAD): support images per round")
    test.add_argument("--rounds", type=int, help="few-shot: support sets drawn (default 10)")
    test.add_argument("--seed", type=int, default=0, help="few-shot: seed of the support sets")
    test.add_argument("--device")
    test.set_defaults(func=cmd_test)

    adapt = commands.add_parser("adapt", help="few-shot: fit a RegAD model to a new category")
    adapt.add_argument("run")
    adapt.add_argument("--data", required=True, help="a data root (with --category) or a folder")
    adapt.add_argument("--category", help="the new category in a data root")
    adapt.add_argument("--shots", type=int, required=True)
    adapt.add_argument("--out", required=True)
    adapt.add_argument("--seed", type=int, default=0)
    adapt.add_argument("--device")
    adapt.set_defaults(func=cmd_adapt)

    predict = commands.add_parser("predict", help="score images, write heat-map overlays")
    predict.add_argument("run")
    predict.add_argument("images", nargs="+", help="image files or folders")
    predict.add_argument("--out", required=True)
    predict.add_argument("--category", help="which model of a per-category run")
    predict.add_argument("--device")
    predict.set_defaults(func=cmd_predict)

    demo = commands.add_parser("demo", help="offline demo: unified UniAD on ELPV solar cells")
    demo.add_argument("--out", default="demo_out")
    demo.add_argument("--device")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AdformerError as error:
        print(f"adformer: error: {error}", file=sys.stderr)
        return 2
