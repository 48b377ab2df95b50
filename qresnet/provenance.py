"""What a run records about where it ran: package versions, Python, the machine and its load."""

from __future__ import annotations

import os
import platform
from importlib import metadata

PACKAGES = ("qresnet", "qiskit", "qiskit-aer", "qiskit-machine-learning", "qiskit-ibm-runtime",
            "torch", "numpy", "scipy", "scikit-learn", "pennylane")


def package_versions() -> dict[str, str | None]:
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
