"""Fully connected autoencoder: flatten -> hidden widths -> code -> mirrored decoder."""

from __future__ import annotations

import math

import torch
from torch import nn

from reconad.models import _layers
from reconad.models._base import Autoencoder


def _hidden_block(n_in: int, n_out: int, act: str, batch_norm: bool, dropout: float) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(n_in, n_out)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(n_out))
    layers.append(_layers.activation(act))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class DenseAutoencoder(Autoencoder):
    """Dense autoencoder, e.g. 784-512-256-32-256-512-784 with a sigmoid output.

    Args:
        input_shape: ``(C, H, W)`` of the images.
        hidden: Encoder hidden widths; the decoder uses them in reverse.
        latent: Size of the code.
        activation: Hidden activation name (``relu``, ``tanh``, ``leaky_relu``, ``elu``,
            ``gelu``).
        latent_activation: ``none``, ``same`` or ``tanh`` on the code.
        batch_norm: Batch norm after each hidden linear layer.
        dropout: Dropout probability after each hidden activation (0 = none).
        n_classes: Normal classes of the class head on the code (0 = no class head).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        hidden: list[int],
        latent: int,
        activation: str = "leaky_relu",
        latent_activation: str = "none",
        batch_norm: bool = False,
        dropout: float = 0.0,
        n_classes: int = 0,
    ) -> None:
        super().__init__(input_shape, (latent,))
        size = math.prod(self.input_shape)
        widths = [size, *hidden]
        self.encoder = nn.Sequential(
            nn.Flatten(),  # (B, C*H*W)
            *(
                _hidden_block(a, b, activation, batch_norm, dropout)
                for a, b in zip(widths[:-1], widths[1:], strict=True)
            ),
            nn.Linear(widths[-1], latent),
            _layers.latent_activation(latent_activation, activation),
        )
        back = [latent, *reversed(hidden)]
        self.decoder = nn.Sequential(
            *(
                _hidden_block(a, b, activation, batch_norm, dropout)
                for a, b in zip(back[:-1], back[1:], strict=True)
            ),
            nn.Linear(back[-1], size),
            nn.Sigmoid(),
        )
        self._add_class_head(n_classes)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> codes ``(B, latent)``."""
        _layers.check_input(x, self.input_shape)
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, latent)`` -> reconstructions ``(B, C, H, W)`` in [0, 1]."""
        return self.decoder(z).view(z.shape[0], *self.input_shape)
