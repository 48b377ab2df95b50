"""Backend specs: one string says where circuits run (docs/design.md section 4)."""

from __future__ import annotations

from dataclasses import dataclass

from qresnet.backends.devices import canonical_device_name
from qresnet.errors import BackendSpecError

KINDS = {
    "aer": "Aer, noiseless; `aer:<fake device>` adds that device's noise model, basis and coupling map",
    "local": "qiskit-ibm-runtime local testing mode on a fake device: the Runtime client path, run locally",
    "ibm": "IBM Quantum through Qiskit Runtime (needs QISKIT_IBM_TOKEN; see .env.example)",
}
EXAMPLES = ("aer", "aer:fake_manila", "aer:fake_torino", "local:fake_manila", "ibm:ibm_torino")


@dataclass(frozen=True)
class BackendSpec:
    """Where circuits run: ``kind`` is aer, local or ibm; ``device`` a fake device or an IBM device name.

    >>> BackendSpec.coerce("aer:FakeManilaV2")
    BackendSpec(kind='aer', device='fake_manila')
    >>> str(BackendSpec.coerce("aer"))
    'aer'
    """

    kind: str
    device: str | None = None

    @classmethod
    def coerce(cls, spec: str | BackendSpec) -> BackendSpec:
        if isinstance(spec, BackendSpec):
            return spec
        if not isinstance(spec, str):
            raise BackendSpecError(f"backend spec must be a string such as {EXAMPLES[1]!r}, got {type(spec).__name__}")
        kind, sep, device = spec.strip().partition(":")
        kind = kind.strip().lower()
        device = device.strip()
        if kind not in KINDS:
            raise BackendSpecError(
                f"unknown backend {spec!r}: it must start with one of {', '.join(KINDS)} "
                f"(for example {', '.join(EXAMPLES)})"
            )
        example = "ibm_torino" if kind == "ibm" else "fake_manila"
        if sep and not device:
            raise BackendSpecError(f"backend {spec!r} names no device after ':' (for example {kind}:{example})")
        if kind in ("local", "ibm") and not device:
            raise BackendSpecError(f"backend {spec!r} needs a device: {kind}:<device>, for example {kind}:{example}")
        if kind in ("aer", "local") and device:
            device = canonical_device_name(device)
        return cls(kind, device or None)

    @property
    def on_device(self) -> bool:
        """``local:`` and ``ibm:``: circuits go through Qiskit Runtime as jobs (QPU time on ibm:)."""
        return self.kind in ("local", "ibm")

    @property
    def noisy(self) -> bool:
        return self.kind != "aer" or self.device is not None

    def __str__(self) -> str:
        return self.kind if self.device is None else f"{self.kind}:{self.device}"
