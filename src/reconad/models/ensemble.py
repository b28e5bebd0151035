"""An ensemble of autoencoders that reconstructs with its members' mean.

Each member is an independently initialised copy of one architecture and learns to
reconstruct on its own (the training loop sums the members' own losses, see
:meth:`EnsembleAutoencoder.member_reconstructions`); the ensemble reconstructs with their mean,
which averages out what a single initialisation happens to reconstruct well or badly. The code
is the members' flattened codes side by side, ``(B, members * code_size)``; with a class head
each member has its own, on its own code (:func:`reconad.models.class_logits`).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class EnsembleAutoencoder(nn.Module):
    """Several autoencoders side by side, e.g. 4 dense 784-256-128-16 ones.

    Args:
        members: The autoencoders; each has ``encode``, ``decode``, ``input_shape`` and
            ``code_shape``, all with the same shapes.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        first = members[0]
        self.input_shape = first.input_shape
        self.member_code_shape = tuple(first.code_shape)
        self.code_shape = (len(members) * math.prod(self.member_code_shape),)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> the members' codes side by side ``(B, K * D)``."""
        return torch.cat([m.encode(x).flatten(1) for m in self.members], dim=1)

    def member_codes(self, z: torch.Tensor) -> list[torch.Tensor]:
        """The code ``(B, K * D)`` cut into each member's code ``(B, *code_shape)``."""
        parts = z.split(math.prod(self.member_code_shape), dim=1)
        return [part.view(len(z), *self.member_code_shape) for part in parts]

    def member_reconstructions(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Each member's reconstruction ``(B, C, H, W)`` from its part of the code ``z``."""
        return [m.decode(part) for m, part in zip(self.members, self.member_codes(z),
                                                  strict=True)]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, K * D)`` -> the mean of the members' reconstructions ``(B, C, H, W)``."""
        return torch.stack(self.member_reconstructions(z)).mean(dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct a batch of images ``(B, C, H, W)`` with the members' mean."""
        return self.decode(self.encode(x))
