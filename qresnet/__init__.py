"""qresnet: Residual Quanvolutional Neural Networks (ResQuNNs) on Qiskit.

Layers, bottom up: ``circuits`` (templates, no backend knowledge) -> ``backends`` (spec
parsing, transpilation, estimators) -> torch modules -> experiments -> ``cli``.
"""

__version__ = "0.1.0"
