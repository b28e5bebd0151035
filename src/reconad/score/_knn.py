"""Exact k-nearest-neighbour search of codes in a bank of training codes (``latent_knn``).

Float32, memory bounded by blocks of queries and bank codes; candidates ranked by the matmul
form and re-measured directly, so small distances are exact.

>>> bank = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
>>> knn_distance(torch.tensor([[0.0, 0.0]]), bank, k=2).tolist()   # (0 + 1) / 2
[0.5]
"""

from __future__ import annotations

import numpy as np
import torch

KNN_QUERIES = 256  # codes compared with the bank at once
KNN_BANK_CHUNK = 8192  # bank codes per distance block: at most (256, 8192) floats at once
KNN_MARGIN = 8  # extra candidates re-measured exactly, in case rounding misordered the k-th
KNN_SHORTLIST = 64  # test-time copies look for their neighbours among the image's 64 nearest
KNN_GROUP = 32  # bank codes per group in the two-stage search for the nearest (see smallest)


@torch.no_grad()
def knn_distance(codes: torch.Tensor, bank: torch.Tensor, k: int) -> np.ndarray:
    """Mean Euclidean distance of each code (N, D) to its ``k`` nearest bank codes (M, D):
    (N,) float64.

    Float32 throughout, memory bounded by blocks of queries and bank codes. Candidates come
    from the matmul form ``|a|^2 + |b|^2 - 2 a.b`` (fast, but it loses small distances to
    cancellation); the ``k + KNN_MARGIN`` best candidates are then measured again directly as
    ``|a - b|``, which is accurate, and the ``k`` smallest of those are averaged.
    """
    return knn_search(codes, bank, k, k + KNN_MARGIN)[0]


@torch.no_grad()
def knn_search(codes: torch.Tensor, bank: torch.Tensor, k: int,
               n_candidates: int) -> tuple[np.ndarray, torch.Tensor]:
    """:func:`knn_distance` of ``codes`` (N, D), and each code's ``n_candidates`` (>= k)
    nearest bank rows found on the way, (N, n_candidates) int64 (nearest first, up to the
    matmul form's rounding): a shortlist for :func:`knn_distance_among`."""
    k = min(k, len(bank))
    n_candidates = min(len(bank), max(n_candidates, k))
    # Rank by |b|^2 - 2 a.b (|a|^2 is the same for all of a row's candidates), in one matmul:
    # [a, 1] . [-2 b, |b|^2].
    keys = torch.cat([-2.0 * bank, (bank * bank).sum(1, keepdim=True)], dim=1).T  # (D+1, M)
    out, lists = [], []
    for start in range(0, len(codes), KNN_QUERIES):
        query = codes[start : start + KNN_QUERIES]  # (B, D)
        lifted = torch.cat([query, torch.ones(len(query), 1)], dim=1)  # (B, D+1)
        found_d, found_i = [], []
        for b0 in range(0, len(bank), KNN_BANK_CHUNK):
            rank = lifted @ keys[:, b0 : b0 + KNN_BANK_CHUNK]  # (B, Mb)
            d, i = smallest(rank, min(n_candidates, rank.shape[1]))
            found_d.append(d)
            found_i.append(i + b0)
        pick = torch.cat(found_d, 1).topk(n_candidates, dim=1, largest=False).indices
        candidates = torch.cat(found_i, 1).gather(1, pick)  # (B, n_candidates) bank rows
        out.append(knn_distance_among(query, bank, candidates, k))
        lists.append(candidates)
    if not out:
        return np.empty(0), torch.empty(0, n_candidates, dtype=torch.int64)
    return np.concatenate(out), torch.cat(lists)


def knn_distance_among(codes: torch.Tensor, bank: torch.Tensor, candidates: torch.Tensor,
                       k: int) -> np.ndarray:
    """Mean Euclidean distance of each code (N, D) to its ``k`` nearest among its own
    ``candidates`` (N, C) rows of ``bank``, measured directly as ``|a - b|``: (N,) float64."""
    return knn_distance_to(codes, bank[candidates], k)


def knn_distance_to(codes: torch.Tensor, neighbours: torch.Tensor, k: int) -> np.ndarray:
    """:func:`knn_distance_among` with the candidates' codes gathered already, (N, C, D): a
    shortlist gathered once serves all of an image's test-time copies (the gather costs
    more than the distances)."""
    exact = (codes[:, None, :] - neighbours).norm(dim=2)  # (N, C)
    nearest = exact.topk(min(k, exact.shape[1]), dim=1, largest=False).values.sort(dim=1).values
    return nearest.double().mean(1).numpy()


def smallest(values: torch.Tensor, n: int,
             group: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` smallest entries of each row of ``values`` (B, M) and their columns, as
    ``torch.topk(values, n, largest=False)`` gives them (ties aside), about twice as fast.

    The row is cut into groups of ``group`` entries and only the ``n`` groups with the smallest
    minima are searched: each of the ``n`` smallest entries lies in one of those groups (an
    entry in any other group has ``n`` group minima, ``n`` other entries, at or below it).
    """
    group = group or KNN_GROUP
    b, m = values.shape
    if m <= n * group:
        return values.topk(n, dim=1, largest=False)
    pad = (-m) % group
    if pad:
        values = torch.nn.functional.pad(values, (0, pad), value=float("inf"))
    groups = values.view(b, -1, group)
    picked = groups.amin(2).topk(n, dim=1, largest=False).indices  # (B, n) group numbers
    members = groups.gather(1, picked[:, :, None].expand(-1, -1, group)).reshape(b, -1)
    found, where = members.topk(n, dim=1, largest=False)
    columns = (picked[:, :, None] * group + torch.arange(group)).reshape(b, -1)
    return found, columns.gather(1, where)
