"""A sweep under drift: every run's last checkpoint evaluated under another backend (``qresnet compare --drift
SPEC``), and the report's section: the accuracy change per configuration as a paired interval over seeds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from qresnet.backends import BackendOptions, BackendSpec
from qresnet.run.result import RunResult
from qresnet.study import evidence as ev

if TYPE_CHECKING:  # annotations only: evaluating builds models (torch); a report of the numbers needs none
    from qresnet.run.drift import DriftEvaluation
    from qresnet.study.sweep import SweepResult

Drifted = tuple[RunResult, "DriftEvaluation"]


def sweep_drift(result: SweepResult, out: str | Path, backend: BackendSpec | str,
                options: BackendOptions | None = None) -> list[Drifted]:
    """Each finished run of the sweep in ``out`` evaluated under ``backend`` (its ``evaluations/`` file written)."""
    from qresnet.run.drift import evaluate_drift

    return [(run, evaluate_drift(Path(out) / run.run_dir, backend, options)) for run in result.runs if run.metrics]


def drift_section(drifted: Sequence[Drifted]) -> list[str]:
    """``## Drift`` lines: per training backend, head and filter, each configuration's accuracy under the other
    backend minus under its own, trainable and frozen, paired by seed (the same checkpoint on both)."""
    if not drifted:
        return []
    other = drifted[0][1].evaluated_on
    groups: dict[tuple[str, str, str], dict[tuple[str, bool], list[float]]] = {}
    for run, evaluation in sorted(drifted, key=lambda d: d[0].seed):
        setting = (str(run.backend), run.head, run.filter)
        groups.setdefault(setting, {}).setdefault((run.config, run.frozen), []).append(evaluation.change)
    lines = [f"## Drift: every run's last checkpoint evaluated on {other}", "",
             f"Accuracy on {other} minus on the backend the run was trained on, the same checkpoint and test set; mean "
             "with the 95% interval over seeds (the change of each seed is one pair).", ""]
    for (backend, head, kind), changes in groups.items():
        lines += [f"**trained on {backend}, {head} head" + ("" if kind == "quantum" else ", classical control") + "**",
                  "", "| configuration | trainable | frozen |", "|---|---|---|"]
        for config in dict.fromkeys(c for c, _ in changes):
            cells = []
            for frozen in (False, True):
                values = changes.get((config, frozen))
                cells.append(ev.paired(values, [0.0] * len(values)).describe() if values else "-")
            lines.append(f"| `{config}` | {cells[0]} | {cells[1]} |")
        lines.append("")
    return lines
