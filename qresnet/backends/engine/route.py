"""The engine's routes and its width bounds: the one place both live, read by the primitive and the differentiator.

A route is how the engine evaluates one circuit for some observables (``EngineCore.route`` picks it):

- ``HEISENBERG``: product-state programs (each qubit's prefix a Bloch vector per row; the body carries the
  observables backwards once per distinct body setting), noisy or ideal. Values, Jacobians and pullbacks.
- ``STATEVECTOR``: ideal product-state programs wider than ``HEISENBERG_IDEAL_QUBITS`` or with more than
  ``PER_GROUP_LOOP`` body settings, a statevector per row. Values only: derivatives take ``HEISENBERG``.
- ``ENCODED_CONE``: a circuit that opens with an amplitude encoding, its state prepared exactly and the
  observables carried back through their light cone behind it (the Heisenberg route on the cone).
- ``ENCODED_STATEVECTOR``: the same, ideal, when the cone is wider than ``HEISENBERG_IDEAL_QUBITS``: each encoded
  state through the whole register, derivatives by the adjoint method.
- ``TOO_WIDE``: a product-state circuit over its bound: ``run`` hands it to the fallback, the differentiator refuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from qresnet.backends.engine.encoded import EncodedProgram
from qresnet.backends.engine.program import Program

# Memory bounds: the Heisenberg routes hold 4^n doubles per observable and body setting (n = 10: 8 MiB each),
# the statevector routes 2^n complex numbers per row (n = 20: 16 MiB each). Noisy circuits have the Heisenberg
# routes only, so MAX_NOISY_QUBITS bounds them, and every derivative of a product-state program (forward and
# reverse mode are Heisenberg sweeps).
MAX_NOISY_QUBITS = 10
MAX_IDEAL_QUBITS = 20
HEISENBERG_IDEAL_QUBITS = 6  # ideal circuits (and encoded light cones) up to this width take a Heisenberg route too
MAX_PULLBACK_BYTES = 1 << 30  # reverse mode keeps one image per operation; past this, forward mode (chunked)


class RouteKind(Enum):
    """The routes; each value is the ``route`` a PUB's metadata reports."""

    HEISENBERG = "heisenberg"
    STATEVECTOR = "statevector"
    ENCODED_CONE = "state-preparation"
    ENCODED_STATEVECTOR = "state-preparation-statevector"
    TOO_WIDE = "too-wide"

    @property
    def encoded(self) -> bool:
        return self in (RouteKind.ENCODED_CONE, RouteKind.ENCODED_STATEVECTOR)


@dataclass(frozen=True, eq=False)
class Route:
    """One circuit's route for some observables: what to run and how wide it is.

    ``width``: the qubits simulated (for ``TOO_WIDE``, the qubits the circuit and observables touch);
    ``bound``: the width bound the choice was made against. ``program`` is set for the product-state
    routes, ``encoded`` for the encoded ones; ``grouping`` (``group_rows`` of the rows' body columns)
    for ``HEISENBERG`` values, where the choice needed it already.
    """

    kind: RouteKind
    width: int
    bound: int
    program: Program | None = None
    encoded: EncodedProgram | None = None
    grouping: tuple[np.ndarray, np.ndarray] | None = None
