"""Small building blocks shared by the autoencoder families."""

from __future__ import annotations

import torch
from torch import nn

from reconad.errors import ReconadError

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module for a config name (``relu``, ``tanh``, ...)."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ReconadError(
            f"unknown model.activation {name!r}; choose one of {', '.join(_ACTIVATIONS)}"
        ) from None


def latent_activation(name: str, hidden: str) -> nn.Module:
    """The activation on the code: ``none`` (identity), ``same`` (as hidden) or ``tanh``."""
    if name == "none":
        return nn.Identity()
    if name == "same":
        return activation(hidden)
    if name == "tanh":
        return nn.Tanh()
    raise ReconadError(f"unknown model.latent_activation {name!r}; choose none, same or tanh")


def check_input(x: torch.Tensor, shape: tuple[int, int, int]) -> None:
    """Fail with one line when a batch does not match the shape the model was built for."""
    if x.dim() != 4 or tuple(x.shape[1:]) != shape:
        raise ReconadError(
            f"images of shape {tuple(x.shape)} given to a model built for (B, "
            f"{', '.join(map(str, shape))}); score images shaped like the training images"
        )
