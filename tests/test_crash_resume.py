"""A `fit` killed with SIGKILL at a random moment, then rerun with --resume, gives the same
bundle as a fit that was never interrupted (CPU, fixed seed, one thread: bit-identical). The
uninterrupted fit runs in this process (no third launch paying torch's import)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.numpy import load_file

from adformer.checkpoint import PREVIOUS
from adformer.cli import main


def _fit(root, out, *extra):
    command = ["fit", "--method", "uniad", "--data", str(root), "--out", str(out)]
    command += ["--preset", "tiny", "--epochs", "30", "--device", "cpu"]
    command += ["--checkpoint-every", "0"]  # every epoch: the kill lands between checkpoints
    return [*command, *extra]


def _launch(root, out, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread, as in this process
    return subprocess.Popen([sys.executable, "-m", "adformer", *_fit(root, out, *extra)], env=env)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_then_resume_gives_the_uninterrupted_bundle(synthetic_root, tmp_path):
    torch.set_num_threads(1)  # the same arithmetic as the launched fits
    assert main(_fit(synthetic_root, tmp_path / "straight")) == 0

    killed = tmp_path / "killed"
    process = _launch(synthetic_root, killed)
    deadline = time.monotonic() + 120
    while not (killed / PREVIOUS).exists() and process.poll() is None:  # 2 epochs done
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(random.Random().uniform(0, 0.3))  # a random step, maybe mid-write
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "config.json").exists(), "the fit finished before it was killed"
    assert _launch(synthetic_root, killed, "--resume").wait() == 0

    straight = load_file(tmp_path / "straight" / "model.safetensors")
    resumed = load_file(killed / "model.safetensors")
    assert straight.keys() == resumed.keys()
    assert all((straight[k] == resumed[k]).all() for k in straight)
    a, b = (
        json.loads((d / "config.json").read_text())["state"]
        for d in (tmp_path / "straight", killed)
    )
    assert a["threshold"] == b["threshold"] and a["map_low"] == b["map_low"]
