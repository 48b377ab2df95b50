"""Readout error folded into observables, so exact expectation values include it.

Aer's exact expectation values (precision 0) leave readout error out: it acts on measured
bits, not on the state. For independent per-qubit assignment errors e0 = P(read 1 | 0) and
e1 = P(read 0 | 1), the measured value of a Pauli factor P on qubit q (measured in P's
eigenbasis) is the expectation of ``(e1 - e0) I + (1 - e0 - e1) P``. Replacing each
non-identity factor so gives an observable whose exact value is the readout-inclusive one;
the state, the noise and the simulator stay as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from qiskit.primitives import BaseEstimatorV2
from qiskit.primitives.containers import EstimatorPubLike, ObservablesArray
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.providers import BackendV2

ReadoutErrors = Mapping[int, tuple[float, float]]


def readout_errors(backend: BackendV2) -> dict[int, tuple[float, float]]:
    """Per physical qubit (P(1|0), P(0|1)), exactly as Aer's ``NoiseModel.from_backend`` builds them."""
    from qiskit_aer.noise.device.models import basic_device_readout_errors

    errors = {}
    for qubits, error in basic_device_readout_errors(target=backend.target):
        probs = np.asarray(error.probabilities)
        errors[qubits[0]] = (float(probs[0, 1]), float(probs[1, 0]))
    return errors


def fold_readout(terms: Mapping[str, float], errors: ReadoutErrors) -> dict[str, float]:
    """Map {Pauli label: coefficient} (Qiskit order: qubit 0 is the last character) to its readout-inclusive form."""
    out: dict[str, float] = {}
    for label, coeff in terms.items():
        n = len(label)
        expanded = {label: coeff}
        for pos, char in enumerate(label):
            if char == "I":
                continue
            e0, e1 = errors.get(n - 1 - pos, (0.0, 0.0))
            next_terms: dict[str, float] = {}
            for lab, c in expanded.items():
                kept, dropped = c * (1.0 - e0 - e1), c * (e1 - e0)
                next_terms[lab] = next_terms.get(lab, 0.0) + kept
                if dropped:
                    lab_i = lab[:pos] + "I" + lab[pos + 1:]
                    next_terms[lab_i] = next_terms.get(lab_i, 0.0) + dropped
            expanded = next_terms
        for lab, c in expanded.items():
            out[lab] = out.get(lab, 0.0) + c
    return out


class ReadoutFoldingEstimator(BaseEstimatorV2):
    """An estimator whose exact values include readout error: folds it into each PUB's observables."""

    def __init__(self, estimator: BaseEstimatorV2, errors: ReadoutErrors):
        self.estimator = estimator
        self.errors = dict(errors)

    def run(self, pubs: Iterable[EstimatorPubLike], *, precision: float | None = None):
        folded = []
        for pub in pubs:
            pub = EstimatorPub.coerce(pub, precision)
            obs = pub.observables
            mapped = np.empty(obs.shape, dtype=object)
            for index in np.ndindex(obs.shape):
                mapped[index] = fold_readout(obs[index], self.errors)
            folded.append(EstimatorPub(pub.circuit, ObservablesArray(mapped),
                                       pub.parameter_values, pub.precision, validate=False))
        return self.estimator.run(folded, precision=precision)
