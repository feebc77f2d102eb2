"""Helpers shared by the benchmark scripts: machine description, matmul throughput, option
parsing and the validation-vs-test agreement of a configuration."""

from __future__ import annotations

import json
import os
import platform
import re
import time

import numpy as np
import torch


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    # the vector instructions torch's CPU kernels use: two "AMD EPYC" machines of this project
    # differed in them (AVX-512 with bf16, AVX2) and RegAD's CPU fit by 2.4x
    cpu += f" ({torch.backends.cpu.get_cpu_capability()})"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def matmul_gflops(size: int = 1024, repeats: int = 30) -> float:
    """Measured fp32 matmul throughput of this machine with the current thread count."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def add_run_options(parser) -> None:
    """--threads and --set KEY=VALUE (a config option, JSON-parsed), shared by the scripts."""
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")


def apply_run_options(args) -> dict:
    """Set the thread count and return the --set options as a dict."""
    torch.set_num_threads(args.threads)
    return dict(parse_assignment(item) for item in args.set)


def parse_assignment(item: str) -> tuple[str, object]:
    """``KEY=VALUE`` → (key, value), the value JSON where it parses (``true``, ``8``, ``null``)."""
    key, _, value = item.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def parse_config(text: str) -> tuple[str, dict]:
    """``NAME:KEY=VALUE,KEY=VALUE`` → (name, options); a value may hold commas
    (``stages=[2,3,4]``): the next assignment starts at a comma followed by ``KEY=``."""
    name, _, assignments = text.partition(":")
    items = list(filter(None, re.split(r",(?=\w+=)", assignments)))
    if any("=" not in item for item in items):
        raise SystemExit(f"--config {text}: expected NAME:KEY=VALUE,...")
    return name, dict(parse_assignment(item) for item in items)


def agreement(name: str, row: dict, preset: dict) -> str:
    """Per seed, `name` minus the preset on validation and on the test, and at how many seeds
    the two differences have the same sign (what choosing on validation needs)."""
    seeds = sorted(row["by_seed"].keys() & preset["by_seed"].keys())
    pairs = [
        [a - b for a, b in zip(row["by_seed"][s], preset["by_seed"][s], strict=True)] for s in seeds
    ]
    if not pairs:
        return f"- {name}: no seed with validation and test beside the preset's"
    validation = ", ".join(f"{v:+.3f}" for v, _ in pairs)
    test = ", ".join(f"{t:+.3f}" for _, t in pairs)
    same = sum(np.sign(v) == np.sign(t) for v, t in pairs)  # a tie agrees only with a tie
    return (
        f"- {name} − preset, per seed ({', '.join(map(str, seeds))}): validation {validation}; "
        f"test {test}; the same sign at {same} of {len(pairs)} seeds"
    )


def add_grid_options(parser) -> None:
    """What names a grid of `adformer benchmark`: the method, data, categories, preset, seeds
    and the cap on training images."""
    parser.add_argument("--method", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--categories", nargs="+")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-train", type=int)
    parser.add_argument("--shots", type=int, default=4, help="k, for a few-shot method")
    parser.add_argument("--rounds", type=int, default=5, help="few-shot: support sets per category")
    parser.add_argument(
        "--labelled-validation",
        type=int,
        default=0,
        metavar="N",
        help="ELPV: N defective cells per category out of the test set, to choose on",
    )
    parser.add_argument("--peers", nargs="*", default=[], help="padim patchcore, on the same test")


def grid_options(args) -> dict:
    """`run_benchmark`'s keywords for the grid `args` names (all but the method and preset)."""
    names = ("categories", "seeds", "max_train", "shots", "rounds", "labelled_validation")
    return {name: getattr(args, name) for name in names}


def run_peers(args, out) -> list[str]:
    """`args.peers` on the grid `args` names (its split, seeds and labelled defects), kept in
    `out` and resumed like any benchmark; beside a few-shot method only the peers trained on
    the same k support images. Returns the grid's names of the peers."""
    import adformer
    from adformer.benchmark import run_benchmark, shot_peer_names

    if not args.peers:
        return []
    few_shot = adformer.methods.get(args.method).learning_type == "few_shot"
    # with the preset's name, as `adformer benchmark --preset P --peers ...` runs them (the
    # peers ignore it): a benchmark folder's finished peer cells can be copied in
    run_benchmark(
        args.data,
        [],
        out,
        preset=args.preset,
        peers=args.peers,
        shot_peers=few_shot,
        **grid_options(args),
    )
    return shot_peer_names(args.peers, args.shots) if few_shot else list(args.peers)


def fitted_at_random(method: str, preset: str, options: dict):
    """A detector with random weights and the state fit would leave (for speed and memory:
    they do not depend on the weights); RegAD is adapted to 4 random images."""
    import adformer

    detector = adformer.create(method, preset, **options).build(False, "cpu")
    size = detector.config.image_size
    if detector.learning_type == "few_shot":
        detector.categories_ = ["random"]
        detector.adapt(torch.rand(4, 3, size, size), category="random")
    else:  # what fit would set; the values do not change the speed
        detector.categories_, detector.threshold_ = ["random"], 1.0
        detector.threshold_source_, detector.map_low_ = "benchmark", 0.0
    return detector
