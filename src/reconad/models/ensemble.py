"""An ensemble of autoencoders that reconstructs with its members' mean.

Each member is an independently initialised copy of one architecture and learns to
reconstruct on its own (the training loop averages the members' own losses, see
:meth:`EnsembleAutoencoder.member_reconstructions`); the ensemble reconstructs with their mean,
which averages out what a single initialisation happens to reconstruct well or badly. The code
is the members' flattened codes side by side, ``(B, members * code_size)``; with a class head
each member has its own, on its own code (:meth:`EnsembleAutoencoder.class_logits`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from reconad.models._base import Autoencoder


class EnsembleAutoencoder(Autoencoder):
    """Several autoencoders side by side, e.g. 4 dense 784-256-128-16 ones.

    Args:
        members: The autoencoders, all of one architecture (same shapes, same class head).
    """

    def __init__(self, members: list[Autoencoder]) -> None:
        first = members[0]
        super().__init__(first.input_shape, (len(members) * math.prod(first.code_shape),))
        self.members = nn.ModuleList(members)
        self.member_code_shape = tuple(first.code_shape)
        self.n_classes = first.n_classes  # each member has its own head; the ensemble none

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> the members' codes side by side ``(B, K * D)``."""
        return torch.cat([m.encode(x).flatten(1) for m in self.members], dim=1)

    def member_codes(self, z: torch.Tensor) -> list[torch.Tensor]:
        """The code ``(B, K * D)`` cut into each member's code ``(B, *code_shape)``."""
        parts = z.split(math.prod(self.member_code_shape), dim=1)
        # -1, not len(z): an exported graph keeps its batch axis (len() is traced as a number)
        return [part.view(-1, *self.member_code_shape) for part in parts]

    def member_reconstructions(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Each member's reconstruction ``(B, C, H, W)`` from its part of the code ``z``."""
        return [m.decode(part) for m, part in zip(self.members, self.member_codes(z),
                                                  strict=True)]

    def class_logits(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Each member's class logits ``(B, n_classes)`` from its own part of the code."""
        return [logits for m, part in zip(self.members, self.member_codes(z), strict=True)
                for logits in m.class_logits(part)]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, K * D)`` -> the mean of the members' reconstructions ``(B, C, H, W)``."""
        return torch.stack(self.member_reconstructions(z)).mean(dim=0)
