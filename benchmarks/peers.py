"""adformer beside anomalib's PaDiM and PatchCore: same images, same split, same
EfficientNet-Lite0 ImageNet weights, same machine, one run.

    .venv/bin/pip install -e ".[peers]"
    .venv/bin/python benchmarks/peers.py --data elpv --max-train 150 --seeds 0 --methods uniad adtr

The peers are anomalib's torch models driven directly (no Lightning): PaDiM on the stride
4/8/16 stages (100 random channels of 176, as PaDiM's ResNet-18 default keeps 100), PatchCore
on the stride 8/16 stages with 3×3 neighbourhood pooling (anomalib's default) and a 1 %
coreset, both at 256 px. They train on every ``train/good`` image of a category;
adformer holds out 10 % (at most 20) of them for validation, as `adformer fit` does. Test
images and metrics are identical for all. ``validation`` columns are adformer's own
no-test-label signal (held-out good images vs synthetic defects painted on them).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import add_run_options, apply_run_options, load_categories, machine

import adformer
from adformer.backbones.weights import resolve_weights
from adformer.data.dataset import loader
from adformer.evaluation.evaluate import evaluate
from adformer.evaluation.metrics import image_metrics, pixel_metrics
from adformer.runs import model_groups

PEER_SIZE = 256
LITE0 = "tf_efficientnet_lite0"


def _lite0_into(timm_features: torch.nn.Module) -> None:
    weights = resolve_weights(LITE0).state_dict
    own = [k for k in timm_features.state_dict() if not k.endswith("num_batches_tracked")]
    timm_features.load_state_dict({k: weights[k] for k in own}, strict=False)


def peer(name: str, seed: int):
    torch.manual_seed(seed)  # PaDiM's channel subset, PatchCore's coreset start
    if name == "padim":
        from anomalib.models.image.padim.torch_model import PadimModel

        model = PadimModel(
            backbone=LITE0,
            layers=["blocks.1", "blocks.2", "blocks.4"],
            pre_trained=False,
            n_features=100,
        )
    else:
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel

        model = PatchcoreModel(layers=["blocks.2", "blocks.4"], backbone=LITE0, pre_trained=False)
    _lite0_into(model.feature_extractor.feature_extractor)
    return model


def _normalised(images: torch.Tensor) -> torch.Tensor:
    return (images - 0.5) / 0.5  # lite0's mean = std = 0.5


@torch.no_grad()
def fit_peer(name: str, model, samples) -> None:
    model.train()
    model.feature_extractor.eval()
    for batch in loader(samples, PEER_SIZE, 16):
        model(_normalised(batch.images))
    if name == "padim":
        model.fit()
    else:
        model.subsample_embedding(0.01)


@torch.no_grad()
def test_peer(model, category) -> dict:
    model.eval()
    scores, labels, maps, masks = [], [], [], []
    for batch in loader(category.test, PEER_SIZE, 16):
        out = model(_normalised(batch.images))
        scores.append(out.pred_score.flatten().numpy())
        maps.append(out.anomaly_map[:, 0].numpy())
        labels.append(batch.labels.numpy())
        masks.append(batch.masks.numpy())
    result = image_metrics(np.concatenate(labels), np.concatenate(scores))
    if category.has_masks:
        result |= pixel_metrics(np.concatenate(masks), np.concatenate(maps))
    return result


def run_adformer(method, categories, preset, seed, options) -> dict[str, dict]:
    """{category: metrics} with fit time and validation, one model per category unless the
    method is unified."""
    out = {}
    for group in model_groups(method, categories):
        torch.manual_seed(seed)
        start = time.perf_counter()
        detector = adformer.create(method, preset, seed=seed, **options)
        detector.fit(group, progress=False)
        fit = time.perf_counter() - start
        metrics = evaluate(detector, group).metrics["per_category"]
        for name, result in metrics.items():
            out[name] = result | {"fit_s": fit / len(group), "validation": detector.validation_}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="elpv")
    parser.add_argument("--categories", nargs="+")
    parser.add_argument("--max-train", type=int, help="ELPV: good training cells per category")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=["uniad", "adtr"])
    parser.add_argument("--peers", nargs="*", default=["padim", "patchcore"])
    parser.add_argument("--preset", default="cpu")
    add_run_options(parser)
    args = parser.parse_args()
    options = apply_run_options(args)
    rows = []
    for seed in args.seeds:
        categories = load_categories(args.data, args.categories, seed, args.max_train)
        for name in args.peers:
            for category in categories:
                start = time.perf_counter()
                model = peer(name, seed)
                fit_peer(name, model, category.train)
                fit = time.perf_counter() - start
                result = test_peer(model, category)
                rows.append((seed, name, category.name, result, fit, None))
                print(seed, name, category.name, result, f"fit {fit:.0f} s", flush=True)
        for method in args.methods:
            for category, r in run_adformer(method, categories, args.preset, seed, options).items():
                rows.append((seed, method, category, r, r["fit_s"], r["validation"]))
                print(seed, method, category, r, flush=True)
    print(f"\nmachine: {machine()}; threads {args.threads}; preset {args.preset} {options}")
    print("| seed | model | category | image AUROC | pixel AUROC | fit s | validation I / P |")
    print("|---|---|---|---|---|---|---|")
    for seed, model, category, r, fit, val in rows:
        pixel = "-" if r.get("pixel_auroc") is None else f"{r['pixel_auroc']:.4f}"
        checked = "-" if not val else f"{val['image_auroc']:.3f} / {val['pixel_auroc']:.3f}"
        print(
            f"| {seed} | {model} | {category} | {r['image_auroc']:.4f} | {pixel} | {fit:.0f} "
            f"| {checked} |"
        )
    print("\nadformer minus the best peer (image AUROC), per seed and category:")
    for seed, model, category, r, _, _ in rows:
        if model in args.peers:
            continue
        peers = [p for p in rows if p[0] == seed and p[2] == category and p[1] in args.peers]
        if not peers:
            continue
        best = max(p[3]["image_auroc"] for p in peers)
        print(f"  seed {seed} {model:6s} {category:10s} {r['image_auroc'] - best:+.4f}")


if __name__ == "__main__":
    main()
