"""Training loop: early stopping restores the best weights, Ctrl-C keeps them, seeds repeat."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tolerances import approx, assert_close

import reconad.train._loop as train_module
from reconad.config import LossConfig, ModelConfig, TrainConfig
from reconad.errors import ReconadError
from reconad.losses import loss_from_config
from reconad.models import build_model
from reconad.train import fit_model, mean_loss

SHAPE = (1, 16, 16)


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(kind="dense", hidden=[64], latent=8), SHAPE)


def _val_loss(model, val_x) -> float:
    return mean_loss(model, torch.from_numpy(val_x), loss_from_config(LossConfig()))


@pytest.fixture(scope="module")
def data(tiny_images):
    x, _ = tiny_images
    return x[:300], x[300:]


def test_training_reduces_the_validation_loss(data):
    train_x, val_x = data
    model = _model()
    before = _val_loss(model, val_x)
    history = fit_model(model, train_x, val_x, LossConfig(),
                        TrainConfig(epochs=5, batch_size=32, lr=3e-3), seed=0, progress=False)
    assert len(history.rows) == 5
    assert history.rows[-1]["val_loss"] < 0.5 * before
    assert [r["epoch"] for r in history.rows] == [1, 2, 3, 4, 5]


def test_early_stopping_restores_the_best_weights(data):
    train_x, val_x = data
    model = _model()
    # min_delta so large that no epoch after the first counts as an improvement.
    cfg = TrainConfig(epochs=10, batch_size=32, lr=3e-3, patience=2, min_delta=10.0)
    history = fit_model(model, train_x, val_x, LossConfig(), cfg, seed=0, progress=False)
    assert history.stopped_early and len(history.rows) == 3 and history.best_epoch == 1
    # The weights in the model are epoch 1's, not epoch 3's.
    assert _val_loss(model, val_x) == approx(history.rows[0]["val_loss"])
    assert history.rows[2]["val_loss"] != pytest.approx(history.rows[0]["val_loss"], rel=1e-3)


def test_ctrl_c_keeps_the_best_model_so_far(data, monkeypatch):
    train_x, val_x = data
    real_epoch = train_module._train_epoch
    calls = {"n": 0}

    def interrupted_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "_train_epoch", interrupted_on_third)
    model = _model()
    history = fit_model(model, train_x, val_x, LossConfig(),
                        TrainConfig(epochs=10, batch_size=32, lr=3e-3), seed=0, progress=False)
    assert history.interrupted and len(history.rows) == 2
    best = min(history.rows, key=lambda r: r["val_loss"])
    assert _val_loss(model, val_x) == approx(best["val_loss"])


def test_fixed_seed_gives_identical_numbers(data):
    train_x, val_x = data
    cfg = TrainConfig(epochs=2, batch_size=32, denoise="gaussian", augment_rotation=10,
                      augment_shift=0.1, l1_latent=1e-3)
    runs = []
    for _ in range(2):
        model = _model()
        history = fit_model(model, train_x, val_x, LossConfig(), cfg, seed=7, progress=False)
        runs.append(([r["train_loss"] for r in history.rows],
                     [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))


def test_flip_augmentation_is_seeded_and_changes_what_is_learnt(data):
    train_x, val_x = data
    losses = {}
    for flip, run in ((True, 0), (True, 1), (False, 0)):
        cfg = TrainConfig(epochs=2, batch_size=32, augment_flip=flip)
        history = fit_model(_model(), train_x, val_x, LossConfig(), cfg, seed=7, progress=False)
        losses[flip, run] = [r["train_loss"] for r in history.rows]
    assert losses[True, 0] == losses[True, 1]
    assert max(abs(a - b) for a, b in zip(losses[True, 0], losses[False, 0], strict=True)) > 1e-6


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "rmsprop"])
def test_every_optimizer_learns(data, optimizer):
    train_x, val_x = data
    model = _model()
    before = _val_loss(model, val_x)
    lr = {"sgd": 0.5, "rmsprop": 1e-3}.get(optimizer, 3e-3)
    fit_model(model, train_x, val_x, LossConfig(),
              TrainConfig(optimizer=optimizer, lr=lr, epochs=3, batch_size=32), seed=0,
              progress=False)
    assert _val_loss(model, val_x) < before


def test_cosine_schedule_decays_the_learning_rate(data):
    train_x, val_x = data
    history = fit_model(_model(), train_x, val_x, LossConfig(),
                        TrainConfig(epochs=4, lr=1e-2, schedule="cosine", batch_size=64),
                        seed=0, progress=False)
    lrs = [r["lr"] for r in history.rows]
    assert lrs[0] == pytest.approx(1e-2) and lrs == sorted(lrs, reverse=True) and lrs[-1] < 2e-3


@pytest.mark.parametrize("loss", ["l1", "bce", "ssim", "mix"])
def test_training_with_each_loss(data, loss):
    train_x, val_x = data
    history = fit_model(_model(), train_x, val_x, LossConfig(kind=loss),
                        TrainConfig(epochs=2, batch_size=64), seed=0, progress=False)
    assert np.isfinite(history.rows[-1]["val_loss"])
    assert history.rows[-1]["train_loss"] <= history.rows[0]["train_loss"] * 1.05


def test_without_validation_the_training_loss_is_watched(data):
    train_x, _ = data
    history = fit_model(_model(), train_x, None, LossConfig(),
                        TrainConfig(epochs=2, batch_size=64), seed=0, progress=False)
    assert history.rows[0]["val_loss"] is None and history.best_epoch >= 1


def test_trim_leaves_the_highest_loss_images_out_of_each_epoch(data, monkeypatch):
    train_x, val_x = data
    odd = 1.0 - train_x[:6]  # 2 % inverted images: the highest loss under any bar model
    pool = np.concatenate([train_x, odd])
    seen = []
    real_epoch = train_module._train_epoch

    def recording(*args, **kwargs):
        seen.append(args[-1])  # the pool of image indices the epoch trains on
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "_train_epoch", recording)
    fit_model(_model(), pool, val_x, LossConfig(),
              TrainConfig(epochs=3, batch_size=32, lr=3e-3, trim=0.02), seed=0, progress=False)
    odd_idx = set(range(len(train_x), len(pool)))
    for epoch_pool in seen[1:]:  # after one epoch the inverted images have the highest loss
        kept = set(epoch_pool.tolist())
        assert len(kept) == len(pool) - 6 and not kept & odd_idx


def test_trimmed_drops_exactly_the_highest_losses():
    losses = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7])

    def loss_fn(x_hat, x):  # the "images" carry their own loss
        return x.flatten(1)[:, 0]

    x = losses.view(5, 1, 1, 1)
    model = torch.nn.Identity()
    assert train_module.trimmed(model, x, loss_fn, 0.4).tolist() == [0, 1, 3]
    assert train_module.trimmed(model, x, loss_fn, 0.0).tolist() == [0, 1, 2, 3, 4]


def test_trim_steps_the_optimizer_once_per_kept_batch(data, monkeypatch):
    """Regression: the epoch loop ran over len(x), not the shorter trimmed pool, so the last
    batches of every epoch were empty and still stepped the optimizer."""
    train_x, val_x = data  # 300 training images
    steps = []
    real_make = train_module.make_optimizer

    def counting_optimizer(model, cfg):
        optimizer = real_make(model, cfg)
        real_step = optimizer.step

        def step(*args, **kwargs):
            steps.append(1)
            return real_step(*args, **kwargs)

        optimizer.step = step
        return optimizer

    monkeypatch.setattr(train_module, "make_optimizer", counting_optimizer)
    batch, epochs, trim = 32, 2, 0.2
    fit_model(_model(), train_x, val_x, LossConfig(),
              TrainConfig(epochs=epochs, batch_size=batch, trim=trim), seed=0, progress=False)
    kept = len(train_x) - int(round(trim * len(train_x)))  # 240
    assert len(steps) == epochs * math.ceil(kept / batch)  # 2 * 8, not 2 * 10


class _Killed(Exception):
    """Stands in for kill -9 in-process: leaves fit_model without any clean-up."""


def _kill_in_third_epoch(monkeypatch, train_x, val_x, cfg, ckpt) -> None:
    """Train with checkpoints to ``ckpt`` and stop dead (no clean-up) inside the third epoch."""
    real_epoch, calls = train_module._train_epoch, {"n": 0}

    def killed_in_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise _Killed
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "_train_epoch", killed_in_third)
    with pytest.raises(_Killed):
        fit_model(_model(), train_x, val_x, LossConfig(), cfg, seed=3, progress=False,
                  checkpoint=ckpt)
    monkeypatch.setattr(train_module, "_train_epoch", real_epoch)


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_resuming_from_the_checkpoint_ends_like_an_uninterrupted_run(data, tmp_path,
                                                                     monkeypatch, schedule):
    train_x, val_x = data
    cfg = TrainConfig(epochs=4, batch_size=64, lr=3e-3, schedule=schedule, denoise="gaussian",
                      augment_shift=0.1, trim=0.1, patience=3)
    whole_model = _model()
    whole = fit_model(whole_model, train_x, val_x, LossConfig(), cfg, seed=3, progress=False)

    ckpt = tmp_path / "checkpoint.pt"
    _kill_in_third_epoch(monkeypatch, train_x, val_x, cfg, ckpt)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2

    resumed_model = _model(seed=99)  # other initial weights: all must come from the checkpoint
    resumed = fit_model(resumed_model, train_x, val_x, LossConfig(), cfg, seed=3,
                        progress=False, checkpoint=ckpt)
    assert resumed.resumed_after == 2
    assert [r["epoch"] for r in resumed.rows] == [1, 2, 3, 4]
    for key in ("train_loss", "val_loss", "lr"):
        assert_close([r[key] for r in resumed.rows], [r[key] for r in whole.rows], what=key)
    assert resumed.best_epoch == whole.best_epoch
    for a, b in zip(resumed_model.parameters(), whole_model.parameters(), strict=True):
        assert_close(a.detach(), b.detach(), what="weights")


def test_a_damaged_checkpoint_is_a_one_line_error(data, tmp_path):
    train_x, val_x = data
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(ReconadError, match="cannot read the training checkpoint"):
        fit_model(_model(), train_x, val_x, LossConfig(), TrainConfig(epochs=1), seed=0,
                  progress=False, checkpoint=ckpt)


def test_a_resumed_run_keeps_the_loss_scale_it_had_reached(data, tmp_path, monkeypatch):
    """float16 training's loss scaler (CUDA) is checkpointed: played here by an enabled CPU
    scaler whose scale doubles every 2 steps, so a resume from its initial scale would differ."""
    train_x, val_x = data
    cfg = TrainConfig(epochs=3, batch_size=64, lr=3e-3)
    made = []

    def scaler(device, dtype):
        made.append(torch.amp.GradScaler("cpu", init_scale=2.0**4, growth_factor=2.0,
                                         growth_interval=2))
        return made[-1]

    monkeypatch.setattr(train_module, "grad_scaler", scaler)
    fit_model(_model(), train_x, val_x, LossConfig(), cfg, seed=3, progress=False)
    whole_scale = made[-1].get_scale()
    assert whole_scale > 2.0**4  # it grew

    ckpt = tmp_path / "checkpoint.pt"
    _kill_in_third_epoch(monkeypatch, train_x, val_x, cfg, ckpt)
    assert torch.load(ckpt, weights_only=True)["scaler"]["scale"] > 2.0**4
    fit_model(_model(), train_x, val_x, LossConfig(), cfg, seed=3, progress=False,
              checkpoint=ckpt)
    assert made[-1].get_scale() == whole_scale


def test_robust_l21_loss_is_what_training_minimises(data, monkeypatch):
    train_x, val_x = data
    kinds = []
    real = train_module.robust_batch_loss

    def recording(per_image, robust="none"):
        kinds.append(robust)
        return real(per_image, robust)

    monkeypatch.setattr(train_module, "robust_batch_loss", recording)
    plain, robust = _model(), _model()
    fit_model(plain, train_x, val_x, LossConfig(), TrainConfig(epochs=1, batch_size=64),
              seed=0, progress=False)
    assert set(kinds) == {"none"}
    kinds.clear()
    history = fit_model(robust, train_x, val_x, LossConfig(robust="l21"),
                        TrainConfig(epochs=1, batch_size=64), seed=0, progress=False)
    assert set(kinds) == {"l21"} and np.isfinite(history.rows[0]["val_loss"])
    # the reported losses stay plain mean losses, on the scale of the validation loss
    assert history.rows[0]["train_loss"] < 2 * history.rows[0]["val_loss"]
    assert not all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(),
                                                      robust.state_dict().values(), strict=True))
