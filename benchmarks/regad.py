"""RegAD: leave-one-out few-shot quality on a synthetic multi-category set, and the speed of
adapting and scoring vs the paper code's Python loop over positions.

    .venv/bin/python benchmarks/regad.py quality --shots 2 4 8 --rounds 5
    .venv/bin/python benchmarks/regad.py speed

quality: for each category of the generated set (data/synthetic.py textures), a model is
trained on the *other* categories (`cpu` preset), then adapted to `rounds` seeded support sets
of k images of the held-out one and tested on its test set (image and pixel AUROC, mean ±
std over rounds, then over held-out categories). ``--subset N`` also adapts the same trained
model with a seeded subset of N embedding channels (PaDiM's memory saving), to see what it
costs in accuracy.

speed: the same embeddings fitted and scored two ways: ours (one batched covariance, batched
Cholesky, one triangular solve for all positions) and the official test's per-position Python
loop (torch.cov, matrix inverse, one Mahalanobis product per sample and position), which lives
only here as the baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import numpy as np
import torch
from common import add_run_options, apply_run_options, machine

import adformer
from adformer.data import load_root
from adformer.data.synthetic import TEXTURES, make_synthetic_dataset
from adformer.evaluation.few_shot import evaluate_few_shot
from adformer.methods.regad import support_views
from adformer.nn.gaussian import Gaussian


def quality(args, options) -> None:
    root = make_synthetic_dataset(
        tempfile.mkdtemp(),
        categories=TEXTURES,
        n_train=args.train_images,
        n_test_good=args.test_images,
        n_test_defect=args.test_images,
        size=256,
    )
    categories = load_root(root)
    variants = [None] + ([args.subset] if args.subset else [])
    results = {(k, v): {"image": [], "pixel": []} for k in args.shots for v in variants}
    for held_out in categories:
        if args.held_out and held_out.name not in args.held_out:
            continue
        start = time.perf_counter()
        detector = adformer.create("regad", "cpu", seed=args.seed, **options)
        detector.fit([c for c in categories if c.name != held_out.name], progress=False)
        fit_seconds = time.perf_counter() - start
        for k, channels in results:
            detector.config = dataclasses.replace(detector.config, channels=channels)
            m = evaluate_few_shot(detector, [held_out], k, args.rounds, args.seed)
            image = (m["image_auroc"], m["image_auroc_std"])  # mean and std over rounds
            pixel = (m["pixel_auroc"], m["pixel_auroc_std"])
            results[k, channels]["image"].append(image)
            results[k, channels]["pixel"].append(pixel)
            print(
                f"held out {held_out.name:8s} (fit {fit_seconds:.0f} s) k={k} channels "
                f"{channels or 'all'}: image AUROC {image[0]:.4f} ± {image[1]:.4f}, pixel "
                f"{pixel[0]:.4f} ± {pixel[1]:.4f} over {args.rounds} rounds",
                flush=True,
            )
    print(f"\nmachine: {machine()}; regad cpu {options}; {args.train_images} train/category")
    for (k, channels), r in results.items():
        image, pixel = np.array(r["image"]), np.array(r["pixel"])
        print(
            f"k={k} channels {channels or 'all'}: image AUROC {image[:, 0].mean():.4f} "
            f"(std over rounds {image[:, 1].mean():.4f}), "
            f"pixel AUROC {pixel[:, 0].mean():.4f} (std over rounds {pixel[:, 1].mean():.4f}), "
            f"mean over held-out categories {args.held_out or [c.name for c in categories]}"
        )


def loop_fit(train: torch.Tensor, eps: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The official RegAD test's Gaussian: a Python loop over positions (cov, then inverse)."""
    identity = torch.eye(train.shape[1])
    return [
        (train[:, :, p].mean(0), torch.linalg.inv(torch.cov(train[:, :, p].T) + eps * identity))
        for p in range(train.shape[2])
    ]


def loop_score(gaussians, test: torch.Tensor) -> torch.Tensor:
    """...and its scoring: one Mahalanobis product per position and sample."""
    return torch.tensor(
        [
            [float(((s[:, p] - mean) @ inverse @ (s[:, p] - mean)).sqrt()) for s in test]
            for p, (mean, inverse) in enumerate(gaussians)
        ]
    ).T


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def speed(args, options) -> None:
    detector = adformer.create("regad", "cpu", **options).build(pretrained=False, device="cpu")
    detector.model_.eval()
    size = detector.config.image_size
    torch.manual_seed(0)  # random weights and images: the speed does not depend on them
    support = torch.rand(args.k, 3, size, size)
    test = torch.rand(args.test_batch, 3, size, size)

    with torch.no_grad():
        _, adapt_seconds = timed(lambda: detector.adapt(support, category="synthetic"))
        views = support_views(support)
        embeddings, embed_seconds = timed(
            lambda: torch.cat([detector.embed(v) for v in views.split(16)])
        )
        gaussian = Gaussian(embeddings.shape[2], embeddings.shape[1])
        _, fit_ours = timed(lambda: gaussian.fit(embeddings, 0.01))
        test_embeddings, test_embed = timed(lambda: detector.embed(test))
        ours, score_ours = timed(lambda: gaussian.distance(test_embeddings))
        _, maps_seconds = timed(lambda: detector.infer(test))
        gaussians, fit_loop = timed(lambda: loop_fit(embeddings, 0.01))
        theirs, score_loop = timed(
            lambda: loop_score(gaussians, test_embeddings[: args.loop_batch])
        )
    score_loop *= args.test_batch / args.loop_batch
    agree = float((ours[: args.loop_batch] - theirs).abs().max() / theirs.abs().max())
    positions, channels = embeddings.shape[2], embeddings.shape[1]
    n = args.test_batch
    print(f"machine: {machine()}; threads {torch.get_num_threads()}")
    print(f"regad cpu {options}: {size} px, {positions} positions x {channels} ch, k={args.k}")
    print(
        f"adapt (22 views each, embed, Gaussian, threshold on the support): {adapt_seconds:.2f} s"
    )
    print(f"  of which embedding {len(views)} views {embed_seconds:.2f} s")
    print(
        f"Gaussian fit: ours {fit_ours:.3f} s, official loop {fit_loop:.2f} s "
        f"({fit_loop / fit_ours:.0f}x)"
    )
    print(
        f"Mahalanobis, {n} images: ours {score_ours:.3f} s, official loop {score_loop:.1f} s "
        f"({score_loop / score_ours:.0f}x; loop timed on {args.loop_batch}); max relative "
        f"difference {agree:.1e}"
    )
    print(
        f"test images/s (embed + distance + upsample + blur): ours {n / maps_seconds:.1f}, "
        f"with the loop's distance {n / (test_embed + score_loop):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["quality", "speed"])
    parser.add_argument("--shots", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--held-out", nargs="+", help="only these categories (default: each)")
    parser.add_argument("--subset", type=int, help="also adapt with N random channels")
    parser.add_argument("--train-images", type=int, default=60)
    parser.add_argument("--test-images", type=int, default=20)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--test-batch", type=int, default=16)
    parser.add_argument("--loop-batch", type=int, default=2)
    add_run_options(parser)
    args = parser.parse_args()
    options = apply_run_options(args)
    (quality if args.what == "quality" else speed)(args, options)


if __name__ == "__main__":
    main()
