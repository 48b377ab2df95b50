"""Shot sampling from the exact outcome distribution, readout error included.

The terms of an observable are split into qubit-wise commuting groups, each measured in its
own basis with ``shots`` shots. For a group measured on qubits M, the outcome probabilities
follow exactly from the expectations of the 2^|M| Pauli strings on subsets of M (a Walsh
transform); the per-qubit readout confusion acts on them; outcomes are drawn from a seeded
multinomial, and each term is estimated from the same counts, as on a device. Every requested
sample is its own draw: an observable asked for twice on the same row gets two independent
estimates, as on a device (and as Aer and ``StatevectorEstimator`` give).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping

import numpy as np

from qresnet.errors import EngineUnsupportedError

MAX_MEASURED = 12  # 2^12 outcome probabilities per row and group


def commuting_groups(terms: Mapping[str, float]) -> tuple[float, list[dict[str, float]]]:
    """(identity coefficient, greedy qubit-wise commuting groups of the other terms)."""
    identity = 0.0
    groups: list[tuple[dict[int, str], dict[str, float]]] = []
    for label, coeff in terms.items():
        support = {pos: c for pos, c in enumerate(reversed(label)) if c != "I"}
        if not support:
            identity += complex(coeff).real
            continue
        for basis, members in groups:
            if all(basis.get(q, c) == c for q, c in support.items()):
                basis.update(support)
                members[label] = coeff
                break
        else:
            groups.append((dict(support), {label: coeff}))
    return identity, [members for _, members in groups]


def sample_expectations(
    terms: Mapping[str, float],
    exact: Callable[[list[dict[str, float]]], np.ndarray],
    shots: int,
    rng: np.random.Generator,
    readout: Mapping[int, tuple[float, float]],
    rows: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Estimates and standard errors (S,) of one observable, one independent sample per entry of ``rows``.

    ``exact(list of {label: coeff})`` returns exact expectations (K, R) without readout error;
    ``rows`` (S,) picks the parameter row of each sample (rows may repeat). Each sample takes
    ``shots`` shots per commuting group.
    """
    identity, groups = commuting_groups(terms)
    total, variance = None, None
    for members in groups:
        basis: dict[int, str] = {}
        for label in members:
            basis.update({pos: c for pos, c in enumerate(reversed(label)) if c != "I"})
        measured = sorted(basis)
        m = len(measured)
        if m > MAX_MEASURED:
            raise EngineUnsupportedError(f"shot sampling measures at most {MAX_MEASURED} qubits per group, this group has {m}")
        width = len(next(iter(members)))
        subsets = list(itertools.product((0, 1), repeat=m))  # subset s: s[i] = 1 if measured[i] in S
        strings = []
        for s in subsets:
            chars = ["I"] * width
            for i, on in enumerate(s):
                if on:
                    chars[width - 1 - measured[i]] = basis[measured[i]]
            strings.append({"".join(chars): 1.0})
        expectations = exact(strings)  # (2^m, R)
        outcomes = np.array(subsets)  # outcome bits b, same enumeration
        walsh = (-1.0) ** (outcomes @ outcomes.T)  # (-1)^{b . s}
        probs = (walsh @ expectations).T / 2**m  # (R, 2^m), outcome b
        probs = probs.reshape((-1,) + (2,) * m)
        for i, q in enumerate(measured):
            e0, e1 = readout.get(q, (0.0, 0.0))
            confusion = np.array([[1 - e0, e1], [e0, 1 - e1]])  # [read, true]
            probs = np.moveaxis(np.tensordot(probs, confusion, axes=([1 + i], [1])), -1, 1 + i)
        probs = np.clip(probs.reshape(len(probs), -1), 0.0, None)
        probs /= probs.sum(axis=1, keepdims=True)
        counts = rng.multinomial(shots, probs[rows])  # (S, 2^m)
        # the value of the group's observable on each outcome
        value = np.zeros(2**m)
        for label, coeff in members.items():
            on = np.array([label[width - 1 - q] != "I" for q in measured])
            value += complex(coeff).real * (-1.0) ** (outcomes[:, on].sum(axis=1))
        mean = counts @ value / shots
        var = counts @ value**2 / shots - mean**2
        total = mean if total is None else total + mean
        variance = var / shots if variance is None else variance + var / shots
    if total is None:  # the identity alone: nothing to measure, nothing uncertain
        return np.full(len(rows), identity), np.zeros(len(rows))
    return identity + total, np.sqrt(np.maximum(variance, 0.0))
