"""Helpers for qresnet's small value objects and packages: checked integers, checked fields from a dict, names
loaded on first use."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any

from qresnet.errors import ConfigError


def checked_int(value: object, name: str, minimum: int | None = 1, *, maximum: int | None = None,
                error: type[Exception] = ConfigError, hint: str = "") -> int:
    """``value`` as an ``int`` if it is an integer (numpy's too) in ``minimum..maximum`` (``None``: unbounded);
    else ``error`` in one line naming ``name``, with ``hint`` after the rule.

    ``True`` is refused although Python counts it as 1: a flag that lands in a count is a mistake.

    >>> checked_int(3, "epochs"), checked_int(0, "validate_patches", 0)
    (3, 0)
    >>> checked_int(True, "epochs")
    Traceback (most recent call last):
    ...
    qresnet.errors.ConfigError: epochs=True must be a positive integer
    >>> checked_int(5, "measured", maximum=4)
    Traceback (most recent call last):
    ...
    qresnet.errors.ConfigError: measured=5 must be an integer from 1 to 4
    """
    integer = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if integer and (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
        return int(value)
    if maximum is not None:
        rule = f"an integer from {minimum} to {maximum}" if minimum is not None else f"an integer at most {maximum}"
    else:
        rule = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer of at least {minimum}")
    raise error(f"{name}={value!r} must be {rule}{hint}")


def known_fields(cls: type, values: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    """``values`` as a dict if every key is a field of the dataclass ``cls``; else a ConfigError naming the others.

    >>> from qresnet.backends.options import BackendOptions
    >>> known_fields(BackendOptions, {"shot": 10}, "backend options")
    Traceback (most recent call last):
    ...
    qresnet.errors.ConfigError: unknown backend options ['shot']; valid: account, dynamical_decoupling, engine, execution_mode, initial_layout, measure_mitigation, optimization_level, readout, resilience_level, seed, seed_transpiler, shots, twirling
    """
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {what} {unknown}; valid: {', '.join(sorted(known))}")
    return values


def lazy_exports(package: str, homes: Mapping[str, tuple[str, ...]]) -> tuple[Callable[[str], Any], list[str]]:
    """A package's ``__getattr__`` and ``__all__`` for names that load from ``homes`` (module -> names) on first use,
    so that importing the package (e.g. for ``qresnet --help``) imports no Qiskit or torch."""
    module_of = {name: module for module, names in homes.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(module_of[name]), name)

    return __getattr__, sorted(module_of)
