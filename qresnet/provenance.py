"""What a run records about where it ran: package versions, Python, the machine and its load."""

from __future__ import annotations

import functools
import os
import platform
from importlib import metadata

PACKAGES = ("qresnet", "qiskit", "qiskit-aer", "qiskit-machine-learning", "qiskit-ibm-runtime",
            "torch", "numpy", "scipy", "scikit-learn", "pennylane")


def package_versions() -> dict[str, str | None]:
    return dict(_installed_versions())


@functools.cache
def _installed_versions() -> dict[str, str | None]:
    """Read once per process: the code a process runs is the code it imported, whatever is installed later, and
    reading the metadata costs 20 ms, paid per run of a stack otherwise."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment() -> dict:
    """Versions plus the machine state, so figures measured on a shared machine can be read in context."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "packages": package_versions(),
    }
