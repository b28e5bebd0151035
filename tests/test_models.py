"""Autoencoder builders: shapes, value range, options, learning, and bad configs."""

from __future__ import annotations

import pytest
import torch

from reconad.config import ModelConfig
from reconad.errors import ReconadError
from reconad.models import ConvAutoencoder, DenseAutoencoder, build_model, count_parameters

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 17, 23)]


def _check_reconstruction(model: torch.nn.Module, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    x = torch.rand(3, *shape)
    for train in (True, False):
        model.train(train)
        with torch.no_grad():
            y = model(x)
        assert y.shape == x.shape
        assert y.dtype == torch.float32
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.equal(model.decode(model.encode(x)), model(x))  # eval mode: deterministic


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "activation,latent_activation,batch_norm,dropout",
    [
        ("relu", "none", False, 0.0),
        ("tanh", "tanh", True, 0.0),
        ("leaky_relu", "same", False, 0.2),
        ("elu", "none", True, 0.3),
        ("gelu", "same", True, 0.1),
    ],
)
def test_dense_output_matches_input_shape_and_range(shape, activation, latent_activation,
                                                    batch_norm, dropout):
    cfg = ModelConfig(kind="dense", hidden=[32, 16], latent=4, activation=activation,
                      latent_activation=latent_activation, batch_norm=batch_norm,
                      dropout=dropout)
    model = build_model(cfg, shape)
    assert isinstance(model, DenseAutoencoder)
    _check_reconstruction(model, shape)
    assert model.encode(torch.rand(3, *shape)).shape == (3, 4)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("downsample", ["stride", "maxpool"])
@pytest.mark.parametrize("upsample", ["transpose", "upsample"])
@pytest.mark.parametrize("bottleneck", [True, False])
def test_conv_output_matches_input_shape_and_range(shape, downsample, upsample, bottleneck):
    # Alternate the remaining options so every one is on in some combinations.
    batch_norm = (downsample == "stride") != bottleneck
    cfg = ModelConfig(kind="conv", channels=[4, 8, 8], latent=6, kernel=3,
                      downsample=downsample, upsample=upsample, bottleneck=bottleneck,
                      batch_norm=batch_norm, dropout=0.1 if upsample == "upsample" else 0.0,
                      activation="relu" if batch_norm else "elu")
    model = build_model(cfg, shape)
    assert isinstance(model, ConvAutoencoder)
    _check_reconstruction(model, shape)
    code = model.encode(torch.rand(2, *shape))
    # Three stages halve a size padded up to a multiple of 8: 28 -> 32 -> 4, 17 -> 24 -> 3.
    expected = (2, 6) if bottleneck else (2, 8, -(-shape[1] // 8), -(-shape[2] // 8))
    assert code.shape == expected


@pytest.mark.parametrize("kernel", [1, 5, 7])
def test_conv_handles_other_odd_kernels(kernel):
    cfg = ModelConfig(kind="conv", channels=[4, 4], kernel=kernel, latent=3)
    _check_reconstruction(build_model(cfg, (1, 17, 23)), (1, 17, 23))


def test_dense_parameter_count_matches_hand_count():
    model = build_model(ModelConfig(hidden=[64], latent=8), (1, 28, 28))
    # 784*64+64 + 64*8+8 (encoder) + 8*64+64 + 64*784+784 (decoder)
    assert count_parameters(model) == 50240 + 520 + 576 + 50960


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_a_few_adam_steps_reduce_the_loss(kind, tiny_images):
    torch.manual_seed(0)
    x = torch.from_numpy(tiny_images[0][:64])  # (64, 1, 16, 16)
    cfg = ModelConfig(kind=kind, hidden=[64], latent=8, channels=[8, 16])
    model = build_model(cfg, (1, 16, 16))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = torch.mean((model(x) - x) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_latent_larger_than_input_is_rejected(kind):
    cfg = ModelConfig(kind=kind, latent=100, channels=[4])
    with pytest.raises(ReconadError, match=r"model.latent=100 exceeds the input size 64 .*"
                                           r"choose a smaller latent"):
        build_model(cfg, (1, 8, 8))


def test_conv_without_bottleneck_ignores_latent_size():
    cfg = ModelConfig(kind="conv", latent=100, channels=[4], bottleneck=False)
    _check_reconstruction(build_model(cfg, (1, 8, 8)), (1, 8, 8))


def test_even_kernel_is_rejected():
    with pytest.raises(ReconadError, match="model.kernel=4 is even.*use 3 or 5"):
        build_model(ModelConfig(kind="conv", kernel=4), (1, 28, 28))


def test_bad_input_shape_is_rejected():
    with pytest.raises(ReconadError, match=r"input shape \(28, 28\) is not"):
        build_model(ModelConfig(), (28, 28))


def test_images_of_the_wrong_shape_are_rejected():
    model = build_model(ModelConfig(hidden=[8], latent=2), (1, 8, 8))
    with pytest.raises(ReconadError, match=r"images of shape \(2, 1, 9, 9\) given to a model "
                                           r"built for \(B, 1, 8, 8\)"):
        model(torch.rand(2, 1, 9, 9))


@pytest.mark.parametrize("cfg", [
    ModelConfig(kind="dense", hidden=[16], latent=3),
    ModelConfig(kind="conv", channels=[4, 8], latent=3),
    ModelConfig(kind="dense", hidden=[16], latent=3, members=2),
])
@pytest.mark.parametrize("n_classes", [0, 3])
def test_every_model_follows_one_contract(cfg, n_classes):
    """A single model is an ensemble of one: the same four methods, no type checks needed."""
    from reconad.models import Autoencoder

    cfg = cfg.model_copy(update={"class_head": n_classes > 0})
    torch.manual_seed(0)
    model = build_model(cfg, (1, 16, 16), n_classes).eval()
    assert isinstance(model, Autoencoder) and model.n_classes == n_classes
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        code = model.encode(x)
        recons = model.member_reconstructions(code)
        assert len(recons) == cfg.members
        torch.testing.assert_close(model.decode(code), torch.stack(recons).mean(0))
        torch.testing.assert_close(model(x), model.decode(code))
        logits = model.class_logits(code)
    assert len(logits) == (cfg.members if n_classes else 0)
    assert all(t.shape == (4, n_classes) for t in logits)


def test_class_head_is_declared_by_the_constructor_with_the_saved_key_names():
    model = build_model(ModelConfig(kind="dense", hidden=[16], latent=3, class_head=True),
                        (1, 16, 16), n_classes=2)
    assert {"class_head.1.weight", "class_head.1.bias"} <= set(model.state_dict())
    plain = build_model(ModelConfig(kind="dense", hidden=[16], latent=3), (1, 16, 16), 5)
    assert plain.class_head is None and plain.n_classes == 0
    assert not any(k.startswith("class_head") for k in plain.state_dict())
