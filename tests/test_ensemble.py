"""model.members: an ensemble of independently trained autoencoders, reconstructing by mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tolerances import assert_close

from reconad.config import LossConfig, ModelConfig, TrainConfig
from reconad.detector import Detector
from reconad.models import EnsembleAutoencoder, build_model
from reconad.train import fit_model


@pytest.mark.parametrize("cfg,code", [
    (ModelConfig(kind="dense", hidden=[16], latent=4, members=3), 12),
    (ModelConfig(kind="conv", channels=[4, 8], bottleneck=False, members=2), 2 * 8 * 7 * 7),
])
def test_ensemble_code_is_side_by_side_and_output_the_mean(cfg, code):
    torch.manual_seed(0)
    model = build_model(cfg, (1, 28, 28)).eval()
    assert isinstance(model, EnsembleAutoencoder) and len(model.members) == cfg.members
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        z = model.encode(x)
        assert z.shape == (5, code)
        members = torch.stack([m(x) for m in model.members])
        torch.testing.assert_close(model(x), members.mean(0))
    # The members start from different weights.
    first, second = (next(m.parameters()) for m in model.members[:2])
    assert not torch.equal(first, second)


def test_members_learn_on_their_own_losses(tiny_images):
    """Member 0 of an ensemble trains exactly like a lone model from the same start: its
    gradient is its own loss's, not that of the ensemble's mean reconstruction."""
    x, _ = tiny_images
    # SGD without momentum: the ensemble's loss is the mean over its 2 members, so twice the
    # learning rate gives member 0 exactly the lone model's steps.
    cfg = TrainConfig(optimizer="sgd", momentum=0.0, epochs=2, batch_size=32, lr=0.5,
                      patience=None)
    torch.manual_seed(0)
    lone = build_model(ModelConfig(hidden=[32], latent=4), (1, 16, 16))
    torch.manual_seed(0)
    ensemble = build_model(ModelConfig(hidden=[32], latent=4, members=2), (1, 16, 16))
    fit_model(lone, x, None, LossConfig(), cfg, seed=3, progress=False)
    fit_model(ensemble, x, None, LossConfig(), cfg.model_copy(update={"lr": 1.0}), seed=3,
              progress=False)
    for a, b in zip(lone.parameters(), ensemble.members[0].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_ensemble_detector_scores_the_mean_reconstruction_and_round_trips(tiny_images, tmp_path):
    x, y = tiny_images
    det = Detector(model={"hidden": [32], "latent": 4, "members": 3, "class_head": True},
                   train={"epochs": 2}, score={"parts": ["recon", "latent_knn", "class_energy"]},
                   ).fit(x[y < 3], y=y[y < 3])
    assert det.scorer_.bank.shape[1] == 12
    members = torch.stack([m(torch.from_numpy(x)) for m in det.model_.members]).mean(0)
    assert_close(det.reconstruct(x), members.detach().numpy(), what="ensemble reconstruction")
    # Each member has its own class head on its own code; the energy is their mean.
    with torch.no_grad():
        energies = [-torch.logsumexp(m.class_head(m.encode(torch.from_numpy(x))), dim=1)
                    for m in det.model_.members]
    np.testing.assert_allclose(det.score_parts(x)["class_energy"],
                               torch.stack(energies).mean(0).numpy(), rtol=1e-5, atol=1e-6)
    loaded = Detector.load(det.save(tmp_path / "ens.safetensors"))
    np.testing.assert_array_equal(loaded.anomaly_score(x), det.anomaly_score(x))
