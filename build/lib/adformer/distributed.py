"""torch.distributed for `fit` and `predict`, launched by torchrun (or any launcher that sets
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT): one process per GPU with NCCL, or
per CPU process with gloo. Without a launcher every function here is the one-process case.

    torchrun --nproc-per-node 4 -m adformer fit --method uniad --data /data/mvtec --out runs/u

A rank that fails exits with an error and torchrun stops the others; a rank waiting on a peer
that never answers gives up after `TIMEOUT` (``ADFORMER_DIST_TIMEOUT`` seconds) with an error
instead of hanging. torch is imported only once several processes were launched, so the
torch-free runtime's `predict` can use this module.
"""

from __future__ import annotations

import datetime
import os

TIMEOUT = datetime.timedelta(seconds=float(os.environ.get("ADFORMER_DIST_TIMEOUT", 600)))


def launched() -> bool:
    """Whether a launcher started several processes for this command."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    if not launched():
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def init() -> None:
    """Join the process group the launcher describes (no-op without one, or if joined)."""
    if not launched() or active():
        return
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)


def shutdown() -> None:
    if active():
        import torch.distributed as dist

        dist.destroy_process_group()


def rank() -> int:
    if not active():
        return 0
    import torch.distributed as dist

    return dist.get_rank()


def world_size() -> int:
    if not active():
        return 1
    import torch.distributed as dist

    return dist.get_world_size()


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0: the process that writes checkpoints, bundles and reports."""
    return rank() == 0


def barrier() -> None:
    if active():
        import torch.distributed as dist

        dist.barrier()


def sum_over_ranks(values: list[float], device) -> list[float]:
    """Element-wise sums of `values` over all ranks (the values themselves in one process)."""
    if not active():
        return values
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather(value) -> list:
    """Every rank's `value` (picklable), in rank order, on every rank."""
    if not active():
        return [value]
    import torch.distributed as dist

    out = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


def shard(count: int) -> slice:
    """This rank's contiguous share of `count` items (sizes differ by at most one)."""
    size, index = world_size(), rank()
    return slice(index * count // size, (index + 1) * count // size)
