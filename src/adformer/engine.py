"""The one training loop: device, seeds, optimiser and schedule, gradient clipping, mixed
precision (bf16/fp16 autocast), torch.compile, several processes under torchrun (DDP over
global batches that do not depend on the number of processes), validation loss and
best-on-validation weights, early stopping, checksummed checkpoints and resume.

A method hands the engine a network, a loss function on a batch and two datasets; it never
writes a loop of its own.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from adformer import distributed
from adformer.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from adformer.errors import AdformerError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# A checkpoint is written after the first epoch that ends this many seconds after the last one
# was written, and after the last epoch: a crash loses at most about this much training. One
# per epoch would about double a fit of UniAD at the paper's width on a GPU (a 123 MB state
# after each of 1,000 short epochs; docs/benchmarks.md). 0 writes one every epoch.
CHECKPOINT_EVERY = 60.0


@dataclass
class TrainConfig:
    """Optimisation settings every method's config inherits (defaults are overridden per paper)."""

    epochs: int = 100
    batch_size: int = 32
    optimizer: str = "adamw"  # adamw | adam | sgd
    lr: float = 1e-4
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    schedule: str = "step"  # step | cosine | constant
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    grad_clip: float | None = None
    patience: int | None = None  # early stopping on validation loss; None = run all epochs
    # at most this many optimiser steps: a larger training set trains fewer epochs, its lr
    # milestones and cosine period shrunk in proportion; None = every epoch whatever the size.
    # A detector allows it per category it learns (a unified model of N categories: N times)
    max_steps: int | None = None
    seed: int = 0
    # training arithmetic: "auto" (bf16 where the hardware computes it: a GPU, or a CPU with
    # bf16 instructions, `cpu_computes_bf16`; else fp32), "fp32", "bf16" (autocast), "fp16"
    # (autocast + gradient scaling); maps and scores are always computed in fp32
    precision: str = "auto"
    compile: bool = False  # torch.compile the trained network (GPU speed; slow first epoch)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise AdformerError(
                f"unknown precision '{self.precision}': choose from {', '.join(PRECISIONS)}"
            )


@dataclass
class TrainResult:
    best_epoch: int
    best_val_loss: float | None
    epochs_run: int
    epochs_planned: int  # `config.epochs`, or fewer under `config.max_steps`
    history: list[dict] = field(default_factory=list)


def choose_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, else CUDA, else Apple MPS, else CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():  # under torchrun: this process's GPU
        return torch.device("cuda", distributed.local_rank() if distributed.launched() else 0)
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX), where bf16 autocast trains
    faster than fp32; elsewhere it is emulated and slower (here, with oneDNN held to AVX512
    without BF16: 1.3× fp32's step; to AVX2: 13×). The checks are private helpers of
    `torch.cpu`: absent, the answer is no."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def fingerprint_of(values: dict) -> str:
    """A configuration as one canonical string: what must match for a checkpoint to be
    resumed, or for an exported graph to be reused with other weights."""
    return json.dumps(values, sort_keys=True, default=str)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimiser `config` names (``adamw``, ``adam`` ...), over `params`."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    raise AdformerError(f"unknown optimizer '{config.optimizer}': choose adamw, adam or sgd")


def planned_epochs(config: TrainConfig, items: int) -> int:
    """The epochs a fit of `items` training items runs: `config.epochs`, fewer where
    `config.max_steps` caps the steps (at least one epoch)."""
    if config.max_steps is None:
        return config.epochs
    steps_per_epoch = math.ceil(items / config.batch_size)
    return max(1, min(config.epochs, config.max_steps // steps_per_epoch))


def _scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, epochs: int):
    """The lr schedule of a run of `epochs` epochs: milestones are given for `config.epochs`
    and scaled to the run (the same fraction of it)."""
    if config.schedule == "step":
        milestones = [round(m * epochs / max(config.epochs, 1)) for m in config.lr_milestones]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, config.lr_gamma)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(epochs, 1))
    if config.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise AdformerError(f"unknown schedule '{config.schedule}': choose step, cosine or constant")


class Trainer:
    """Runs `config.epochs` epochs (fewer under `config.max_steps`) of `loss_fn(network,
    batch)` over `train`.

    >>> trainer = Trainer(config, device="cpu", run_dir="runs/x")  # doctest: +SKIP
    >>> result = trainer.fit(network, loss_fn, train_set, val_set, resume=False)
    """

    def __init__(
        self,
        config: TrainConfig,
        device: str | torch.device | None = None,
        run_dir: str | Path | None = None,
        progress: bool = True,
        fingerprint: dict | None = None,
        checkpoint_every: float | None = None,
    ):
        self.config = config
        self.device = choose_device(device)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress = progress
        self.checkpoint_every = CHECKPOINT_EVERY if checkpoint_every is None else checkpoint_every
        # what must match for --resume to continue a checkpoint (method and its config)
        self.fingerprint = fingerprint_of(fingerprint or asdict(config))
        # the arithmetic, resolved once ("auto" asks the hardware; `_autocast` runs every step)
        native = self.device.type == "cuda" or (self.device.type == "cpu" and cpu_computes_bf16())
        self.precision = config.precision
        if self.precision == "auto":
            self.precision = "bf16" if native else "fp32"
        elif self.precision == "bf16" and self.device.type == "cpu" and not native:
            warnings.warn(
                "bf16 training on a CPU without bf16 instructions (AVX512-BF16 or AMX) is "
                "emulated and may be slower than fp32: set precision=fp32 (--precision fp32)",
                stacklevel=2,
            )

    def _loader(self, data: Dataset, shuffle: bool, epoch: int) -> DataLoader:
        """This process's part of each global batch (all of it in one process)."""
        seed = self.config.seed * 100_003 + epoch
        if isinstance(data, EpochDataset):
            data.set_epoch(seed)
        sampler = GlobalBatches(len(data), self.config.batch_size, shuffle, seed)
        return DataLoader(data, batch_sampler=sampler)

    def _autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    @torch.no_grad()
    def evaluate(self, network: nn.Module, loss_fn: Callable, data: Dataset) -> float:
        """Mean loss over `data`, over all processes."""
        network.eval()
        total, count = 0.0, 0
        batches = self._loader(data, False, 0)
        for batch, (n, _) in zip(batches, batches.batch_sampler.weights(), strict=True):
            with self._autocast():
                loss = loss_fn(network, _to(batch, self.device))
            total += float(loss) * n
            count += n
        total, count = distributed.sum_over_ranks([total, count], self.device)
        return total / max(count, 1)

    def fit(
        self,
        network: nn.Module,
        loss_fn: Callable[[nn.Module, object], torch.Tensor],
        train: Dataset,
        val: Dataset | None = None,
        resume: bool = False,
    ) -> TrainResult:
        """Train in place; on return `network` holds the best-on-validation weights."""
        config = self.config
        if len(train) == 0:
            raise AdformerError("no training data")
        network.to(self.device)
        # several processes: DDP averages the gradients; the loss is weighted so that the
        # average is the global batch's mean gradient whatever each process's share
        model, world = network, distributed.world_size()
        if world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(network, device_ids=ids)
        if config.compile:
            model = torch.compile(model)
        params = [p for p in network.parameters() if p.requires_grad]
        optimizer = build_optimizer(config, params)
        # fp16's narrow range needs the loss scaled (bf16 has fp32's range)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        epochs = planned_epochs(config, len(train))
        scheduler = _scheduler(config, optimizer, epochs)
        start, best_val, best_epoch, bad_epochs, history = 0, math.inf, -1, 0, []
        best_state = copy.deepcopy(network.state_dict())
        checkpoint = self.run_dir / CHECKPOINT if self.run_dir else None
        if resume:
            if self.run_dir is None:
                raise AdformerError("--resume needs the run directory of the interrupted fit")
            state = load_checkpoint(self.run_dir)
            if state["fingerprint"] != self.fingerprint:
                raise AdformerError(
                    f"--resume: {checkpoint} was written with a different method or config; "
                    "resume with the same options or start a new run"
                )
            network.load_state_dict(state["network"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            best_state, best_val = state["best_state"], state["best_val"]
            start, best_epoch, bad_epochs = state["epoch"] + 1, state["best_epoch"], state["bad"]
            history = json.loads(state["history"])
        if self.run_dir is not None and distributed.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)

        from tqdm.auto import tqdm

        bar = tqdm(
            range(start, epochs),
            initial=start,
            total=epochs,
            desc="train",
            disable=not (self.progress and distributed.is_main()),
            leave=False,
        )
        epoch, saved_epoch, saved_at = start - 1, start - 1, time.monotonic()
        try:
            for epoch in bar:
                began = time.perf_counter()
                seed_everything(config.seed * 100_003 + epoch)  # resumable randomness
                network.train()
                total, count = 0.0, 0
                batches = self._loader(train, True, epoch)
                weights = batches.batch_sampler.weights()
                for batch, (n, global_n) in zip(batches, weights, strict=True):
                    batch = _to(batch, self.device)
                    with self._autocast():
                        loss = loss_fn(model, batch)
                    if not torch.isfinite(loss):
                        raise AdformerError(
                            f"training diverged at epoch {epoch} (loss {float(loss.detach())}); "
                            "lower the learning rate"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    weighted = loss * (n * world / global_n) if world > 1 else loss
                    scaler.scale(weighted).backward()
                    if config.grad_clip:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(params, config.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    total += float(loss.detach()) * n
                    count += n
                lr = optimizer.param_groups[0]["lr"]  # this epoch's
                scheduler.step()
                total, count = distributed.sum_over_ranks([total, count], self.device)
                record = {"epoch": epoch, "lr": lr, "train_loss": total / count}
                criterion = record["train_loss"]
                if val is not None and len(val) > 0:
                    record["val_loss"] = criterion = self.evaluate(network, loss_fn, val)
                record["seconds"] = time.perf_counter() - began  # training + validation
                history.append(record)
                if criterion < best_val:
                    best_val, best_epoch, bad_epochs = criterion, epoch, 0
                    best_state = copy.deepcopy(network.state_dict())
                else:
                    bad_epochs += 1
                bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "epoch"})
                stop = config.patience is not None and bad_epochs >= config.patience
                due = time.monotonic() - saved_at >= self.checkpoint_every
                last = stop or epoch == epochs - 1
                if checkpoint is not None and distributed.is_main() and (due or last):
                    save_checkpoint(
                        {
                            "fingerprint": self.fingerprint,
                            "epoch": epoch,
                            "network": network.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "scaler": scaler.state_dict(),
                            "best_state": best_state,
                            "best_val": best_val,
                            "best_epoch": best_epoch,
                            "bad": bad_epochs,
                            "history": json.dumps(history),
                        },
                        self.run_dir,
                    )
                    saved_epoch, saved_at = epoch, time.monotonic()
                if stop:
                    break
        except KeyboardInterrupt:
            if checkpoint is None:
                kept = "nothing is kept without a run directory (fit --out DIR, or run_dir=DIR)"
            elif saved_epoch < 0:
                kept = "no checkpoint had been written yet"
            else:
                kept = f"the last checkpoint is kept ({checkpoint}, epoch {saved_epoch}). "
                kept += "Continue with --resume."
            raise AdformerError(f"training interrupted during epoch {epoch}; {kept}") from None
        finally:
            bar.close()
        network.load_state_dict(best_state)
        network.eval()
        return TrainResult(
            best_epoch, None if best_val == math.inf else best_val, epoch + 1, epochs, history
        )


class EpochDataset(Dataset):
    """`count` items, each with `width` uniforms in ``self.u[index]``, drawn afresh each epoch
    from the seed the engine gives (`set_epoch`) rather than per item: an item is then the
    same whichever process loads it, so training on several processes sees what one process
    would (InTra's windows, RegAD's pairs). Subclasses define `__getitem__`."""

    def __init__(self, count: int, width: int):
        self.count, self.width = count, width
        self.set_epoch(0)

    def set_epoch(self, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.u = torch.rand(self.count, self.width, generator=generator)

    def __len__(self) -> int:
        return self.count


class GlobalBatches(Sampler[list[int]]):
    """Batches of `batch_size` items in a seeded order, each split across the processes (a
    strided share per rank): the global batch is the same for any number of processes. A
    process whose share of a small last batch is empty loads one item of it and weighs it 0
    (every process must take part in each step)."""

    def __init__(self, count: int, batch_size: int, shuffle: bool, seed: int):
        generator = torch.Generator().manual_seed(seed)
        # one draw first, as torch's shuffling DataLoader makes for its workers' base seed:
        # the orders (and so the models) of earlier adformer versions are reproduced
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
        rank, world = distributed.rank(), distributed.world_size()
        self.batches = order.split(batch_size)
        self.shares = [batch[rank::world] for batch in self.batches]

    def weights(self) -> list[tuple[int, int]]:
        """(items of this process, items of the global batch) per step."""
        return [(len(s), len(b)) for s, b in zip(self.shares, self.batches, strict=True)]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for share, batch in zip(self.shares, self.batches, strict=True):
            yield (share if len(share) else batch[:1]).tolist()


def _to(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a typed batch (NamedTuple)
        return type(batch)(*(_to(b, device) for b in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch
