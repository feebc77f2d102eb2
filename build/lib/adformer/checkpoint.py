"""Training checkpoints that survive a crash at any instant: written atomically (a temporary
file, fsync, rename), each carrying the SHA-256 of its contents, and the previous one kept.
A truncated or corrupt checkpoint is detected, named, and the previous good one used.

File layout: 64 hex characters (SHA-256 of the rest), a newline, then `torch.save` bytes.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path

import torch

from adformer.errors import AdformerError

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.previous.pt"
_DIGEST = 64


def save_checkpoint(state: dict, directory: Path) -> Path:
    """Write `state` as ``directory/checkpoint.pt``; the one it replaces becomes
    ``checkpoint.previous.pt``. A failed write (a full disk) raises and leaves both intact."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    path, tmp = directory / CHECKPOINT, directory / (CHECKPOINT + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(hashlib.sha256(payload).hexdigest().encode() + b"\n")
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise AdformerError(
            f"cannot write the checkpoint {path} ({error.strerror or error}); the previous "
            "checkpoint is kept: free space and continue with --resume"
        ) from error
    if path.exists():
        os.replace(path, directory / PREVIOUS)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: Path) -> dict:
    """One checkpoint file, verified; `AdformerError` naming it if it is damaged."""
    data = path.read_bytes()
    digest, payload = data[:_DIGEST], data[_DIGEST + 1 :]
    if len(data) <= _DIGEST or hashlib.sha256(payload).hexdigest().encode() != digest:
        raise AdformerError(f"{path} is truncated or corrupt (checksum mismatch)")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors have many types
        raise AdformerError(f"{path} cannot be read: {error}") from error


def load_checkpoint(directory: Path) -> dict:
    """The newest good checkpoint in `directory`: ``checkpoint.pt``, or, if it is missing
    or damaged, ``checkpoint.previous.pt`` (with a warning naming what was wrong)."""
    if not any((directory / name).is_file() for name in (CHECKPOINT, PREVIOUS)):
        raise AdformerError(f"--resume: no checkpoint to resume from in {directory}")
    problems = []
    for name in (CHECKPOINT, PREVIOUS):
        path = directory / name
        if not path.is_file():
            problems.append(f"{path} does not exist")
            continue
        try:
            state = read_checkpoint(path)
        except AdformerError as error:
            problems.append(str(error))
            continue
        if problems:
            warnings.warn(f"{problems[0]}; resuming from {path} instead", stacklevel=2)
        return state
    raise AdformerError(f"--resume: no usable checkpoint ({'; '.join(problems)})")
