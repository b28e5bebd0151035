"""The one contract every autoencoder follows; an ensemble is just another autoencoder.

A model maps images ``(B, C, H, W)`` in [0, 1] to a code ``encode(x) -> z`` of shape
``(B, *code_shape)`` and back, ``decode(z) -> x_hat``. Two more methods let training and
scoring treat a single model and an ensemble alike, without asking which one they hold:

- ``member_reconstructions(z)``: each member's own reconstruction (one for a single model);
  each member learns on its own loss.
- ``class_logits(z)``: each member's class-head logits ``(B, n_classes)``; empty without a
  class head (``n_classes == 0``).

The class head, a linear classifier of the flattened code, is declared by the constructor
(``n_classes``), never attached afterwards.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Autoencoder(nn.Module):
    """Base class: shapes, the optional class head and the member methods of a single model.

    Args:
        input_shape: ``(C, H, W)`` of the images.
        code_shape: shape of one image's code, e.g. ``(latent,)``.

    Subclasses build their layers, then call :meth:`_add_class_head` last (so the class
    head's random initialisation comes after the autoencoder's, as in every saved model).
    """

    pass_images: int | None = None
    """At most this many images per scoring pass (None: as many as the image size allows);
    for models whose activations are many times their input."""

    def __init__(self, input_shape: tuple[int, int, int], code_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.code_shape = tuple(code_shape)
        self.n_classes = 0
        self.class_head: nn.Module | None = None

    def _add_class_head(self, n_classes: int) -> None:
        """Declare the class head: ``n_classes`` logits from the flattened code (0 = none).

        Its weights are ``class_head.1.*`` in the state dict, the names saved files use.
        """
        self.n_classes = int(n_classes)
        if self.n_classes:
            self.class_head = nn.Sequential(
                nn.Flatten(), nn.Linear(math.prod(self.code_shape), self.n_classes))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> codes ``(B, *code_shape)``."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, *code_shape)`` -> reconstructions ``(B, C, H, W)`` in [0, 1]."""
        raise NotImplementedError

    def member_reconstructions(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Each member's reconstruction ``(B, C, H, W)`` of the code ``z``: here just one."""
        return [self.decode(z)]

    def class_logits(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Each member's class logits ``(B, n_classes)`` of the code; [] without a class head."""
        return [] if self.class_head is None else [self.class_head(z)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct a batch of images ``(B, C, H, W)``."""
        return self.decode(self.encode(x))
