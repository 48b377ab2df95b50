"""Aer estimators: exact expectation values (statevector or density matrix) or real shot sampling."""

from __future__ import annotations

import math

from qiskit.primitives import BackendEstimatorV2, BaseEstimatorV2
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel
from qiskit_aer.primitives import EstimatorV2 as AerEstimatorV2

from qresnet.backends.readout import ReadoutErrors, ReadoutFoldingEstimator


def shots_to_precision(shots: int) -> float:
    """The precision for which ``BackendEstimatorV2`` takes exactly ``shots`` (it uses ceil(1 / precision^2))."""
    return (1.0 + 1e-12) / math.sqrt(shots)


def aer_estimator(
    noise_model: NoiseModel | None = None,
    readout: ReadoutErrors | None = None,
    shots: int | None = None,
    seed: int | None = None,
) -> BaseEstimatorV2:
    """An Aer-backed ``EstimatorV2``.

    ``shots=None``: exact values (Aer's EstimatorV2 at precision 0; density matrix when noisy),
    with ``readout`` errors folded into the observables. ``shots=N``: N real shots per
    observable group from ``AerSimulator`` (noise model, readout error included as Aer samples
    it), not Aer's Gaussian ``precision`` noise.
    """
    if shots is None:
        backend_options: dict = {"method": "density_matrix" if noise_model else "statevector"}
        if noise_model is not None:
            backend_options["noise_model"] = noise_model
        run_options = {} if seed is None else {"seed_simulator": seed}
        exact = AerEstimatorV2(options={"backend_options": backend_options, "run_options": run_options,
                                        "default_precision": 0.0})
        return ReadoutFoldingEstimator(exact, readout) if readout else exact
    simulator = AerSimulator(noise_model=noise_model, seed_simulator=seed)
    options = {"default_precision": shots_to_precision(shots)}
    if seed is not None:
        options["seed_simulator"] = seed
    return BackendEstimatorV2(backend=simulator, options=options)
