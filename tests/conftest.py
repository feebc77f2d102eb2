"""Shared fixtures: a small synthetic MVTec-layout data set and one tiny fitted UniAD."""

from __future__ import annotations

import os

import pytest
import torch

from adformer.data.synthetic import make_synthetic_dataset

# Tiny but real: the same architecture as the paper, shrunk so it trains in seconds.
TINY_UNIAD = dict(
    preset="cpu",
    precision="fp32",  # the preset's "auto" is bf16 where the CPU has bf16 instructions
    image_size=96,
    hidden_dim=32,
    ffn_dim=64,
    heads=2,
    encoder_layers=1,
    decoder_layers=1,
    neighbour_size=3,
    epochs=40,
    batch_size=8,
    lr=1e-3,
    lr_milestones=(),
    inference_batch_size=8,
)


# under pytest-xdist (`make test`: one worker per core) one thread each, so that the workers
# do not fight over the cores; set here for the session and module fixtures, which are set up
# before any test's own fixtures, and again before each test (a test may change it)
THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("synthetic"),
        categories=("grating", "dots"),
        n_train=16,
        n_test_good=6,
        n_test_defect=6,
        size=96,
    )


@pytest.fixture(scope="session")
def fitted_uniad(synthetic_root, tmp_path_factory):
    import adformer

    torch.manual_seed(0)
    detector = adformer.create("uniad", **TINY_UNIAD)
    run = tmp_path_factory.mktemp("run")
    detector.fit(synthetic_root, run_dir=run, progress=False, device="cpu")
    detector.save(run)
    return detector, run


@pytest.fixture(scope="session")
def tiny_uniad():
    return dict(TINY_UNIAD)


@pytest.fixture(scope="session")
def uniad_export(fitted_uniad, tmp_path_factory):
    """The tiny fitted UniAD exported to ONNX by the CLI (`adformer export`)."""
    from adformer.cli import main

    out = tmp_path_factory.mktemp("export") / "onnx"
    assert main(["export", str(fitted_uniad[1]), "--out", str(out)]) == 0
    return out
