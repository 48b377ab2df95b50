"""Backend specs: one string says where circuits run (docs/design.md section 4), and the grammar of every kind lives here.

``aer``, ``aer:<fake device>``, ``aer:<fake device>@<s>`` (that device's noise scaled by s >= 0),
``noise:<channel>:<p>`` (the ideal circuit with one single-qubit channel of strength 0 <= p <= 1 after
every gate), ``local:<fake device>``, ``ibm:<device>``.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

from qresnet.backends.devices import canonical_device_name
from qresnet.errors import BackendSpecError

CHANNELS = ("depolarizing", "amplitude_damping", "phase_damping", "bit_flip", "phase_flip")
KINDS = {
    "aer": "Aer, noiseless; `aer:<fake device>` adds that device's noise model, basis and coupling map; "
           "`aer:<fake device>@<s>` scales every error of that noise by s >= 0 (e.g. aer:fake_torino@10)",
    "noise": f"the ideal circuit with one channel after every gate on each qubit it acts on: "
             f"`noise:<channel>:<p>`, 0 <= p <= 1, channel one of {', '.join(CHANNELS)} (e.g. noise:depolarizing:0.1)",
    "local": "qiskit-ibm-runtime local testing mode on a fake device: the Runtime client path, run locally",
    "ibm": "IBM Quantum through Qiskit Runtime (needs QISKIT_IBM_TOKEN; see .env.example)",
}
EXAMPLES = ("aer", "aer:fake_manila", "aer:fake_torino", "aer:fake_torino@10", "noise:depolarizing:0.1",
            "local:fake_manila", "ibm:ibm_torino")


@dataclass(frozen=True)
class BackendSpec:
    """Where circuits run: ``kind`` is aer, noise, local or ibm; ``device`` a fake device or an IBM device name;
    ``channel`` and ``p`` the channel of a ``noise:`` spec; ``scale`` the factor of ``aer:<device>@<s>``
    (None: the device's noise as it is).

    >>> BackendSpec.coerce("aer:FakeManilaV2")
    BackendSpec(kind='aer', device='fake_manila', channel=None, p=None, scale=None)
    >>> str(BackendSpec.coerce("aer")), str(BackendSpec.coerce("aer:torino@2.50"))
    ('aer', 'aer:fake_torino@2.5')
    >>> str(BackendSpec.coerce("noise:Bit-Flip:0.10"))
    'noise:bit_flip:0.1'
    """

    kind: str
    device: str | None = None
    channel: str | None = None
    p: float | None = None
    scale: float | None = None

    @classmethod
    def coerce(cls, spec: str | BackendSpec) -> BackendSpec:
        if isinstance(spec, BackendSpec):
            return spec
        if not isinstance(spec, str):
            raise BackendSpecError(f"backend spec must be a string such as {EXAMPLES[1]!r}, got {type(spec).__name__}")
        kind, sep, device = spec.strip().partition(":")
        kind = kind.strip().lower()
        device = device.strip()
        if "@" in kind:
            raise BackendSpecError(f"backend {spec!r}: a noise scale needs a fake device, aer:<fake device>@<s> "
                                   f"(for example aer:fake_torino@10)")
        if kind not in KINDS:
            raise BackendSpecError(
                f"unknown backend {spec!r}: it must start with one of {', '.join(KINDS)} "
                f"(for example {', '.join(EXAMPLES)})"
            )
        if kind == "noise":
            return _channel_spec(spec, device)
        example = "ibm_torino" if kind == "ibm" else "fake_manila"
        if sep and not device:
            raise BackendSpecError(f"backend {spec!r} names no device after ':' (for example {kind}:{example})")
        if kind in ("local", "ibm") and not device:
            raise BackendSpecError(f"backend {spec!r} needs a device: {kind}:<device>, for example {kind}:{example}")
        scale = None
        if "@" in device:
            if kind != "aer":
                raise BackendSpecError(f"backend {spec!r}: scaled noise `@<s>` exists for aer:<fake device> only "
                                       f"(for example aer:fake_torino@10); {kind}: runs the device as it is")
            device, _, text = device.partition("@")
            scale = _number(text, spec, "noise scale", "s >= 0, for example aer:fake_torino@10", upper=math.inf)
            device = device.strip()
            if not device:
                raise BackendSpecError(f"backend {spec!r} names no device before '@' (for example aer:fake_torino@10)")
        if kind in ("aer", "local") and device:
            device = canonical_device_name(device)
        return cls(kind, device or None, scale=scale)

    @property
    def on_device(self) -> bool:
        """``local:`` and ``ibm:``: circuits go through Qiskit Runtime as jobs (QPU time on ibm:)."""
        return self.kind in ("local", "ibm")

    @property
    def simulated(self) -> bool:
        """``aer`` and ``noise`` specs: Aer or the engine simulate the circuits in this process."""
        return self.kind in ("aer", "noise")

    @property
    def noisy(self) -> bool:
        return self.kind != "aer" or self.device is not None

    def __str__(self) -> str:
        if self.kind == "noise":
            return f"noise:{self.channel}:{_format(self.p)}"
        text = self.kind if self.device is None else f"{self.kind}:{self.device}"
        return text if self.scale is None else f"{text}@{_format(self.scale)}"


def _channel_spec(spec: str, rest: str) -> BackendSpec:
    channel, sep, level = rest.partition(":")
    channel = channel.strip().lower().replace("-", "_")
    if not channel:
        raise BackendSpecError(f"backend {spec!r} needs a channel and a strength: noise:<channel>:<p> with channel "
                               f"one of {', '.join(CHANNELS)} and 0 <= p <= 1, for example noise:depolarizing:0.1")
    if channel not in CHANNELS:
        close = difflib.get_close_matches(channel, CHANNELS, n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise BackendSpecError(f"backend {spec!r}: unknown noise channel {channel!r}.{hint} Channels: "
                               f"{', '.join(CHANNELS)}; write noise:<channel>:<p>, for example noise:depolarizing:0.1")
    if not sep or not level.strip():
        raise BackendSpecError(f"backend {spec!r} gives no strength: write noise:{channel}:<p> with 0 <= p <= 1, "
                               f"for example noise:{channel}:0.1")
    p = _number(level, spec, "channel strength p", f"0 <= p <= 1, for example noise:{channel}:0.1", upper=1.0)
    return BackendSpec("noise", channel=channel, p=p)


def _number(text: str, spec: str, what: str, allowed: str, upper: float) -> float:
    """A finite float in [0, upper] (upper=inf: any non-negative finite value), or one line naming it."""
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not (0.0 <= value <= upper) or math.isinf(value):
        problem = "is not a number" if math.isnan(value) else "is out of range"
        raise BackendSpecError(f"backend {spec!r}: {what} {text.strip()!r} {problem}; allowed: {allowed}")
    return value + 0.0  # -0.0 -> 0.0, so that '@-0' and '@0' are one spec


def _format(value: float) -> str:
    """Shortest text that reads back as the same float: 10.0 -> '10', 0.1 -> '0.1'."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
