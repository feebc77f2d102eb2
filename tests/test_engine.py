import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from adformer import engine
from adformer.checkpoint import CHECKPOINT, PREVIOUS, read_checkpoint
from adformer.engine import TrainConfig, Trainer, planned_epochs
from adformer.errors import AdformerError


def _problem(seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=generator)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    return TensorDataset(x, y), TensorDataset(x[:16], y[:16])


def _loss(network, batch):
    x, y = batch
    return nn.functional.mse_loss(network(x).squeeze(-1), y)


def test_trains_and_keeps_the_best_validation_weights(tmp_path):
    train, val = _problem()
    torch.manual_seed(0)
    network = nn.Linear(4, 1)
    config = TrainConfig(epochs=30, batch_size=16, optimizer="adam", lr=0.05)
    result = Trainer(config, "cpu", tmp_path, progress=False).fit(network, _loss, train, val)
    losses = [h["val_loss"] for h in result.history]
    assert losses[-1] < 0.1 * losses[0]
    assert result.best_val_loss == min(losses) and result.best_epoch == losses.index(min(losses))
    final = Trainer(config, "cpu", progress=False).evaluate(network, _loss, val)
    assert final == pytest.approx(result.best_val_loss, rel=1e-5)


def test_early_stopping(tmp_path):
    train, val = _problem()
    network = nn.Linear(4, 1)
    config = TrainConfig(epochs=50, batch_size=16, optimizer="sgd", lr=0.0, patience=3)
    result = Trainer(config, "cpu", progress=False).fit(network, _loss, train, val)
    assert result.epochs_run == 4  # best at epoch 0, then three without improvement


def test_max_steps_caps_the_epochs_of_a_large_training_set_and_scales_its_schedule():
    train, val = _problem()  # 64 items: 4 steps of 16 per epoch
    config = TrainConfig(
        epochs=10, batch_size=16, optimizer="sgd", lr=0.01, lr_milestones=(8,), max_steps=21
    )
    assert planned_epochs(config, 64) == 5 and planned_epochs(config, 16) == 10
    result = Trainer(config, "cpu", progress=False).fit(nn.Linear(4, 1), _loss, train, val)
    assert result.epochs_run == 5  # 20 steps, not 40
    # the milestone at epoch 8 of 10 falls at epoch 4 of 5
    assert [h["lr"] for h in result.history] == pytest.approx([0.01] * 4 + [0.001])
    assert planned_epochs(TrainConfig(epochs=10, max_steps=None), 10_000) == 10


def test_a_diverging_fit_stops_with_a_clear_error_and_keeps_its_last_checkpoint(tmp_path):
    train, val = _problem()
    config = TrainConfig(epochs=5, batch_size=16, optimizer="sgd", lr=0.01)
    calls = {"n": 0}

    def diverging_loss(network, batch):
        calls["n"] += network.training
        loss = _loss(network, batch)
        return loss * float("nan") if calls["n"] > 2 * 4 else loss  # from epoch 2 on

    trainer = Trainer(config, "cpu", tmp_path, progress=False, checkpoint_every=0)
    with pytest.raises(AdformerError, match=r"diverged at epoch 2 .*lower the learning rate"):
        trainer.fit(nn.Linear(4, 1), diverging_loss, train, val)
    saved = read_checkpoint(tmp_path / CHECKPOINT)
    assert saved["epoch"] == 1 and torch.isfinite(saved["network"]["weight"]).all()


def test_resume_continues_where_it_stopped(tmp_path):
    train, val = _problem()
    config = TrainConfig(epochs=6, batch_size=16, optimizer="adam", lr=0.05, seed=3)

    torch.manual_seed(0)
    straight = nn.Linear(4, 1)
    Trainer(config, "cpu", tmp_path / "a", progress=False).fit(straight, _loss, train, val)

    calls = {"n": 0}

    def interrupted_loss(network, batch):
        calls["n"] += network.training  # count training batches only
        if (
            network.training and calls["n"] == 3 * 4 + 1
        ):  # first batch of epoch 3 (4 batches per epoch)
            raise KeyboardInterrupt
        return _loss(network, batch)

    torch.manual_seed(0)
    network = nn.Linear(4, 1)
    trainer = Trainer(config, "cpu", tmp_path / "b", progress=False, checkpoint_every=0)
    with pytest.raises(AdformerError, match="--resume"):
        trainer.fit(network, interrupted_loss, train, val)
    state = read_checkpoint(tmp_path / "b" / CHECKPOINT)
    assert state["epoch"] == 2  # the last finished epoch is on disk, loadable

    resumed = nn.Linear(4, 1)
    result = trainer.fit(resumed, _loss, train, val, resume=True)
    assert [h["epoch"] for h in result.history] == list(range(6))
    assert torch.allclose(resumed.weight, straight.weight, atol=1e-6)


def test_resume_refuses_other_config_or_missing_checkpoint(tmp_path):
    train, val = _problem()
    config = TrainConfig(epochs=2, batch_size=16)
    Trainer(config, "cpu", tmp_path, progress=False).fit(nn.Linear(4, 1), _loss, train, val)
    other = TrainConfig(epochs=2, batch_size=8)
    with pytest.raises(AdformerError, match="different method or config"):
        Trainer(other, "cpu", tmp_path, progress=False).fit(
            nn.Linear(4, 1), _loss, train, val, True
        )
    with pytest.raises(AdformerError, match="no checkpoint"):
        Trainer(config, "cpu", tmp_path / "x", progress=False).fit(
            nn.Linear(4, 1), _loss, train, val, True
        )


@pytest.mark.parametrize("patience", [None, 2])
def test_checkpoints_are_written_at_most_every_interval_and_at_the_end(tmp_path, patience):
    train, val = _problem()
    config = TrainConfig(epochs=8, batch_size=16, optimizer="sgd", lr=0.0, patience=patience)
    trainer = Trainer(config, "cpu", tmp_path, progress=False, checkpoint_every=3600)
    result = trainer.fit(nn.Linear(4, 1), _loss, train, val)
    assert read_checkpoint(tmp_path / CHECKPOINT)["epoch"] == result.epochs_run - 1  # the end
    assert not (tmp_path / PREVIOUS).exists()  # one write in all

    calls = {"n": 0}

    def interrupted_loss(network, batch):
        calls["n"] += network.training
        if network.training and calls["n"] == 2 * 4 + 1:  # epoch 2 of the run below
            raise KeyboardInterrupt
        return _loss(network, batch)

    fresh = Trainer(config, "cpu", tmp_path / "b", progress=False, checkpoint_every=3600)
    with pytest.raises(AdformerError, match="no checkpoint had been written yet"):
        fresh.fit(nn.Linear(4, 1), interrupted_loss, train, val)
    assert not (tmp_path / "b" / CHECKPOINT).exists()
    calls["n"] = 0
    nowhere = Trainer(config, "cpu", None, progress=False)
    with pytest.raises(AdformerError, match="nothing is kept without a run directory"):
        nowhere.fit(nn.Linear(4, 1), interrupted_loss, train, val)


def test_gradient_clipping_bounds_the_step():
    train, _ = _problem()
    network = nn.Linear(4, 1)
    before = network.weight.detach().clone()
    config = TrainConfig(
        epochs=1, batch_size=64, optimizer="sgd", lr=1.0, momentum=0.0, grad_clip=0.01
    )
    Trainer(config, "cpu", progress=False).fit(network, _loss, train)
    assert (network.weight.detach() - before).norm() <= 0.01 + 1e-6


def test_a_damaged_checkpoint_is_named_and_the_previous_one_used(tmp_path):
    train, val = _problem()
    config = TrainConfig(epochs=3, batch_size=16)
    trainer = Trainer(config, "cpu", tmp_path, progress=False, checkpoint_every=0)
    trainer.fit(nn.Linear(4, 1), _loss, train, val)
    assert read_checkpoint(tmp_path / PREVIOUS)["epoch"] == 1
    data = (tmp_path / CHECKPOINT).read_bytes()
    (tmp_path / CHECKPOINT).write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(AdformerError, match="truncated or corrupt"):
        read_checkpoint(tmp_path / CHECKPOINT)
    with pytest.warns(UserWarning, match=f"{CHECKPOINT} is truncated.*{PREVIOUS}"):
        result = Trainer(config, "cpu", tmp_path, progress=False).fit(
            nn.Linear(4, 1), _loss, train, val, resume=True
        )
    assert [h["epoch"] for h in result.history] == [0, 1, 2]  # epoch 2 again


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_like_fp32(precision, tmp_path):
    train, val = _problem()
    networks = {}
    for name in ("fp32", precision):
        torch.manual_seed(0)
        networks[name] = nn.Linear(4, 1)
        config = TrainConfig(epochs=5, batch_size=16, lr=1e-2, precision=name)
        Trainer(config, "cpu", tmp_path / name, progress=False).fit(
            networks[name], _loss, train, val
        )
    low, full = networks[precision].weight, networks["fp32"].weight
    assert low.dtype == torch.float32 and torch.isfinite(low).all()  # fp32 master weights
    assert 0 < (low - full).abs().max() < 0.05  # autocast took effect, and stayed close
    assert "scaler" in read_checkpoint(tmp_path / precision / CHECKPOINT)


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_on_a_cpu_with_bf16_instructions_and_bf16_warns_elsewhere(native, monkeypatch):
    monkeypatch.setattr(engine, "cpu_computes_bf16", lambda: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for precision in ("fp32", "auto", "bf16"):
            Trainer(TrainConfig(precision=precision), "cpu", progress=False)
    messages = [str(w.message) for w in caught]
    assert len(messages) == (0 if native else 1)  # only for bf16 asked for by name
    assert Trainer(TrainConfig(), "cpu").precision == ("bf16" if native else "fp32")  # auto
    assert all("emulated" in m and "--precision fp32" in m for m in messages)


def test_unknown_precision_is_refused_at_create():
    import adformer

    with pytest.raises(AdformerError, match="unknown precision 'fp8'"):
        adformer.create("uniad", preset="tiny", precision="fp8")
