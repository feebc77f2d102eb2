"""torchrun with 2 CPU processes (gloo): the same model as one process trained on the same
global batches, the same predictions CSV, and a failing rank that stops the run instead of
hanging it. The one-process runs are this process's `adformer` CLI (no second launch paying
torch's import)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from safetensors.numpy import load_file

from adformer.cli import main

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]


def _env(tmp_path) -> dict[str, str]:
    """torchrun's agent keeps its logs in a new folder under TMPDIR: the test's, not /tmp."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ADFORMER_DIST_TIMEOUT": "60",
        "TMPDIR": str(tmp_path),
    }


def _adformer(tmp_path, processes: int, *args: str):
    if processes == 1:
        assert main(list(args)) == 0
        return
    command = [*TORCHRUN, str(processes), "-m", "adformer", *args]
    failures = []
    for _ in range(2):  # one retry: a 2-process launch failed once in CI, cause not seen
        result = subprocess.run(
            command, env=_env(tmp_path), capture_output=True, text=True, timeout=300
        )
        if result.returncode == 0:
            return
        failures.append(result.stderr[-3000:])
    raise AssertionError("\n---\n".join(failures))


@pytest.mark.parametrize("method", ["adtr", "intra"])
def test_two_processes_train_the_one_process_model(method, synthetic_root, tmp_path):
    runs = {}
    for processes in (1, 2):
        runs[processes] = tmp_path / f"p{processes}"
        fit = ["fit", "--method", method, "--data", str(synthetic_root), "--category", "dots"]
        _adformer(tmp_path, processes, *fit, "--out", str(runs[processes]), "--preset", "tiny")
    one, two = (load_file(runs[p] / "model.safetensors") for p in (1, 2))
    assert one.keys() == two.keys()
    for key in one:  # equal up to the order of floating-point sums
        assert np.allclose(one[key], two[key], rtol=1e-3, atol=1e-4), key
    assert not (runs[2] / "checkpoint.pt.tmp").exists()


def test_two_processes_predict_the_one_process_csv(fitted_uniad, synthetic_root, tmp_path):
    images = [str(synthetic_root / c / "test") for c in ("dots", "grating")]
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        _adformer(tmp_path, processes, "predict", str(fitted_uniad[1]), *images, "--out", str(out))
    one, two = ((tmp_path / p / "scores.csv").read_text() for p in ("p1", "p2"))
    assert one == two and len(one.splitlines()) == 25
    assert len(list((tmp_path / "p2").glob("*_overlay.png"))) == 24


def test_a_failing_rank_stops_the_run(tmp_path):
    """Rank 1 raises in its third step while rank 0 waits for it in the gradient exchange:
    the run ends with an error (torchrun stops rank 0), it does not hang."""
    script = tmp_path / "fail.py"
    script.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn
            from torch.utils.data import TensorDataset
            from adformer import distributed
            from adformer.engine import TrainConfig, Trainer

            distributed.init()
            steps = {"n": 0}

            def loss(network, batch):
                steps["n"] += 1
                if distributed.rank() == 1 and steps["n"] == 3:
                    raise RuntimeError("rank 1 failed on purpose")
                return (network(batch[0]) - batch[1]).pow(2).mean()

            data = TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
            Trainer(TrainConfig(epochs=50, batch_size=8), "cpu", progress=False).fit(
                nn.Linear(4, 1), loss, data
            )
            """
        )
    )
    result = subprocess.run(
        [*TORCHRUN, "2", str(script)],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode != 0
    assert "rank 1 failed on purpose" in result.stdout + result.stderr
