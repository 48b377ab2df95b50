"""The gradient audit: which quanvolution layers receive a gradient, per residual configuration."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from qresnet.backends import Backend
from qresnet.errors import ConfigError
from qresnet.choices import CONFIG_SETS
from qresnet.nn import ResQuNN
from qresnet.residual import ResidualSpec
from qresnet.run.build import check_layout_width, quanv_layers


@dataclass(frozen=True)
class AuditRow:
    """One configuration: per-layer weight-gradient norms, measured access and the rule's prediction."""

    config: str
    edges: list[list[int]]
    grad_norm: list[float]
    reaches: list[bool]
    predicted: list[bool]

    @property
    def agrees(self) -> bool:
        return self.reaches == self.predicted

    def to_dict(self) -> dict:
        return asdict(self)


def audit_configs(num_layers: int, configs: str) -> list[ResidualSpec]:
    """``paper``: the paper's configurations for this depth; ``all``: every edge set."""
    if configs == "paper":
        return ResidualSpec.paper(num_layers)
    if configs == "all":
        return ResidualSpec.enumerate(num_layers)
    raise ConfigError(f"configs={configs!r} must be one of {', '.join(CONFIG_SETS)}")


def gradient_audit(
    backend: Backend,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_layers: int = 2,
    configs: str | list[ResidualSpec] = "paper",
    input_gradients: bool = False,
    mode: str = "response",
    seed: int = 0,
    progress: bool = False,
) -> list[AuditRow]:
    """Run one batch through every configuration and measure each layer's weight gradient.

    The layers (and so their weights) are shared across configurations: only the skip edges
    and the head change, and a layer whose weights did not change re-evaluates nothing.
    Under the measurement boundary the prediction is the reach rule of docs/design.md section 2;
    with ``input_gradients=True`` the gradient crosses every layer, so every layer is predicted.
    """
    specs = audit_configs(num_layers, configs) if isinstance(configs, str) else list(configs)
    layers = quanv_layers(backend, num_layers, mode=mode, input_gradients=input_gradients, seed=seed)
    check_layout_width(backend.options.initial_layout, [(layers[0].template.name, layers[0].template.num_qubits)])
    num_classes = int(labels.max()) + 1
    rows = []
    for spec in tqdm(specs, desc="gradient audit", disable=not progress, unit="config"):
        model = ResQuNN(layers, spec, tuple(images.shape[-2:]), num_classes, seed=seed)
        model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        norms = [0.0 if layer.weight.grad is None else float(layer.weight.grad.norm()) for layer in layers]
        predicted = [True] * num_layers if input_gradients else list(spec.reaches)
        rows.append(AuditRow(spec.notation, [list(e) for e in sorted(spec.edges)], norms, [n > 0 for n in norms], predicted))
    return rows
