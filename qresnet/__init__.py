"""qresnet: Residual Quanvolutional Neural Networks (ResQuNNs) on Qiskit.

Layers, bottom up: ``circuits`` (templates, no backend knowledge) -> ``backends`` (spec
parsing, transpilation, estimators) -> ``qnn`` and ``nn`` (the torch side) -> ``run`` (one training run)
-> ``study`` (sweeps, reports, the reproduction) -> ``jobs`` (device submissions) -> ``cli``. The README's
layout table is the map; docs/design.md holds the ideas.
"""

__version__ = "0.1.0"
