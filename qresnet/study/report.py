"""The comparison report: the audit checklist, intervals over seeds, paired differences, CSV/JSON and figures.

Every report opens with the checklist: per configuration and setting (backend and head), the six
audit questions of the paper's lesson, each with a verdict by the rules of :mod:`qresnet.study.evidence`
and the numbers behind it (in ``report.md`` and in ``results.json`` under ``evidence``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qresnet.backends import BackendSpec, resolve_backend
from qresnet.circuits import FilterSpec
from qresnet.config import TrainConfig
from qresnet.provenance import environment
from qresnet.residual import ResidualSpec
from qresnet.run.cost import choose_mode, run_cost
from qresnet.run.result import RunResult
from qresnet.run.rundir import atomic_write_json, atomic_write_text
from qresnet.study import evidence as ev
from qresnet.study.drift import Drifted, drift_section
from qresnet.study.report_figures import comparison_figures, noise_families, robustness_figure

if TYPE_CHECKING:  # for the annotations only: the sweep module trains (torch); a report only reads results
    from qresnet.study.sweep import SweepConfig, SweepResult

RESULT_FIELDS = ("backend", "head", "filter", "config", "frozen", "seed", "final_test_acc", "best_test_acc", "final_train_loss",
                 "test_images", "epochs_completed", "wall_time_s", "grad_norms_last_epoch", "predicted_reach",
                 "measured_reach", "run_dir", "reused")
REFERENCE_DEVICE = "aer:fake_torino"  # device costs of a sweep that has no device backend
QUESTIONS = ("Q1 earlier layers get gradients", "Q2 survives a quantum head", "Q3 beats frozen",
             "Q4 placement justified", "Q5 costs reported", "Q6 beats a classical layer of its size")
NOT_APPLICABLE = "-"  # Q6 of the classical control's own rows


@dataclass(frozen=True)
class Setting:
    """Where a group of runs ran: the backend and the head, and the layers' filter (the classical control's runs
    are a setting of their own, named so)."""

    backend: str
    head: str
    filter: str = "quantum"

    def label(self, several_heads: bool) -> str:
        base = f"{self.backend}, {self.head} head" if several_heads else self.backend
        return base if self.filter == "quantum" else f"{base}, classical control"

    def control(self) -> Setting:
        """The classical control of this setting: same backend and head."""
        return Setting(self.backend, self.head, "classical")


class Runs:
    """The sweep's runs by (setting, configuration, frozen), each a list ordered by seed."""

    def __init__(self, rows: Sequence[RunResult]):
        self.rows = list(rows)
        self.settings = list(dict.fromkeys(_setting(r) for r in rows))
        self.configs = list(dict.fromkeys(r.config for r in rows))
        self.seeds = sorted({r.seed for r in rows})
        self.groups: dict[tuple[Setting, str, bool], list[RunResult]] = {}
        for r in sorted(rows, key=lambda r: r.seed):
            self.groups.setdefault((_setting(r), r.config, r.frozen), []).append(r)

    def get(self, setting: Setting, config: str, frozen: bool) -> list[RunResult]:
        return self.groups.get((setting, config, frozen), [])

    def accuracy(self, setting: Setting, config: str, frozen: bool) -> ev.Interval | None:
        runs = self.get(setting, config, frozen)
        return ev.mean_interval([r.final_test_acc for r in runs], bounds=(0.0, 1.0)) if runs else None

    def difference(self, a: tuple[Setting, str, bool], b: tuple[Setting, str, bool]) -> ev.Paired | None:
        """a - b over the seeds both have (same seed: same split and initial weights)."""
        left = {r.seed: r.final_test_acc for r in self.groups.get(a, [])}
        right = {r.seed: r.final_test_acc for r in self.groups.get(b, [])}
        seeds = sorted(set(left) & set(right))
        return ev.paired([left[s] for s in seeds], [right[s] for s in seeds]) if seeds else None


def _setting(run: RunResult) -> Setting:
    return Setting(str(run.backend), run.head, run.filter)


def _device_backend(sweep: SweepConfig):
    """The backend whose device the costs are counted on: the sweep's first noisy one, else the reference."""
    options = sweep.backend_options
    for spec in sweep.backends:
        if spec.device is not None:
            return resolve_backend(spec, options), False
    return resolve_backend(REFERENCE_DEVICE, options.replace(initial_layout=None)), True


def assess(runs: Runs, sweep: SweepConfig) -> dict[str, Any]:
    """Per setting and configuration: the intervals, the paired differences and the six verdicts with their numbers."""
    device, reference = _device_backend(sweep)
    layers = sweep.layers
    several = len({s.head for s in runs.settings}) > 1
    out: dict[str, Any] = {}
    for setting in runs.settings:
        per_config: dict[str, Any] = {}
        for config in runs.configs:
            trained, frozen = runs.get(setting, config, False), runs.get(setting, config, True)
            if not trained and not frozen:
                continue
            spec = ResidualSpec.coerce(config, layers)
            beat = runs.difference((setting, config, False), (setting, config, True))
            quantum = Setting(setting.backend, "quantum", setting.filter)
            head_beat = runs.difference((quantum, config, False), (quantum, config, True))
            control = None if setting.filter != "quantum" else runs.difference((setting, config, False),
                                                                                (setting.control(), config, False))
            measured = [list(r.measured_reach) for r in trained]
            any_run = (trained or frozen)[0]  # train and test sizes are the same in every run of a sweep
            cost_config = TrainConfig(layers=layers, residual=spec, head=setting.head, batch_size=sweep.batch_size,
                                      classes=sweep.classes, frozen=False, filter=setting.filter, quanv=sweep.quanv)
            shape = _image_shape(sweep)
            cost = run_cost(cost_config, device, num_classes=_num_classes(sweep), train_size=any_run.train_images,
                            test_size=any_run.test_images, mode=_layer_mode(cost_config, device, shape),
                            image_shape=shape)
            seconds = [sum(m.seconds for m in r.metrics) / len(r.metrics) for r in trained if r.metrics]
            costs = {"qubits": list(cost.qubits), "boundaries": cost.boundaries, "circuits_per_step": cost.circuits_per_step,
                     "seconds_per_epoch": sum(seconds) / len(seconds) if seconds else None,
                     "device": f"aer:{cost.device}" + (" (reference: the sweep has no device backend)" if reference else ""),
                     "shots": cost.shots, "device_train_epoch_circuits": cost.device_train_epoch_circuits,
                     "device_train_epoch_qpu_seconds": cost.device_train_epoch_qpu_seconds,
                     "device_test_eval_circuits": cost.device_test_eval_circuits,
                     "device_test_eval_qpu_seconds": cost.device_test_eval_qpu_seconds}
            errors = [ev.binomial_error(r.final_test_acc, r.test_images) for r in trained + frozen if r.test_images]
            q2 = ev.beats(head_beat)
            per_config[config] = {
                "trainable": _dict(runs.accuracy(setting, config, False)),
                "frozen": _dict(runs.accuracy(setting, config, True)),
                "trainable_minus_frozen": _dict(beat),
                "test_set_standard_error": sum(errors) / len(errors) if errors else None,
                "verdicts": {
                    QUESTIONS[0]: ev.earlier_layers_learn(measured) if measured else ev.NOT_TESTED,
                    QUESTIONS[1]: q2,
                    QUESTIONS[2]: ev.beats(beat),
                    QUESTIONS[3]: ev.placement_justified(spec.reaches, spec.sees_input),
                    QUESTIONS[4]: ev.costs_reported(costs),
                    QUESTIONS[5]: ev.beats(control) if setting.filter == "quantum" else NOT_APPLICABLE,
                },
                "numbers": {
                    "predicted_reach": list(spec.reaches),
                    "measured_reach_per_seed": measured,
                    "grad_norm_per_epoch_mean_over_seeds": _mean_norms(trained, layers),
                    "quantum_head_trainable_minus_frozen": _dict(head_beat),
                    "quantum_head_command": None if head_beat is not None else _head_command(sweep),
                    "classical_control": _dict(runs.accuracy(setting.control(), config, False)),
                    "quantum_minus_classical": _dict(control),
                    "classical_command": (None if control is not None or setting.filter != "quantum"
                                          else _classical_command(sweep)),
                    "head_sees_input": spec.sees_input,
                    "final_map": _final_map(spec, sweep),
                    "costs": costs,
                },
            }
        out[setting.label(several)] = per_config
    return out


def _num_classes(sweep: SweepConfig) -> int:
    return len(sweep.classes) if sweep.classes else 10


def _image_shape(sweep: SweepConfig) -> tuple[int, int] | None:
    """The images' shape, where the sweep says it (npz: and idx: datasets of their own size do not)."""
    if sweep.image_size is not None:
        return (sweep.image_size, sweep.image_size)
    return {"mnist": (28, 28), "digits": (8, 8)}.get(sweep.dataset)


def _layer_mode(config: TrainConfig, device: Any, image_shape: tuple[int, int] | None) -> str:
    """The mode the sweep's quantum layers ran in (:func:`choose_mode`: today's filter always in response mode);
    response where the image size is not known here."""
    if config.filter != "quantum" or config.quanv == FilterSpec() or image_shape is None:
        return "response"
    template = config.quanv.template()
    return choose_mode(config, template, image_shape, device.transpile(template).circuit)[0]


def _head_command(sweep: SweepConfig) -> str:
    return (f"qresnet compare --preset {sweep.preset} --head linear,quantum --classes 0,1,2,3"
            + (" --data-dir DIR" if sweep.dataset == "mnist" else ""))


def _final_map(spec: ResidualSpec, sweep: SweepConfig) -> list[int] | None:
    shape, f = _image_shape(sweep), sweep.quanv
    return None if shape is None else list(spec.node_shapes(shape, f.kernel_size, f.stride, f.padding)[-1])


def _classical_command(sweep: SweepConfig) -> str:
    return (f"qresnet compare --preset {sweep.preset} --filters quantum,classical"
            + (" --data-dir DIR" if sweep.dataset == "mnist" else ""))


def _mean_norms(trained: list[RunResult], layers: int) -> list[list[float]]:
    if not trained:
        return []
    epochs = min(len(r.metrics) for r in trained)
    return [[sum(r.metrics[e].grad_norm_layers[k] for r in trained) / len(trained) for e in range(epochs)]
            for k in range(layers)]


def _dict(value: ev.Interval | None) -> dict | None:
    return None if value is None else value.to_dict()


def _interval(value: dict | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    cls = ev.Paired if signed else ev.Interval
    return cls(**value).describe()


def write_comparison_report(result: SweepResult, out: str | Path, drift: Sequence[Drifted] = ()) -> Path:
    """results.csv, results.json, report.md and the figures of a sweep's result into ``out``; returns report.md's path.
    ``drift``: the runs evaluated under another backend (:func:`qresnet.study.drift.sweep_drift`), a section of its own."""
    out, sweep, rows = Path(out), result.sweep, result.runs
    runs = Runs(rows)
    assessed = assess(runs, sweep)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=RESULT_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(r.to_dict(metrics=False) for r in rows)
    atomic_write_text(out / "results.csv", table.getvalue())
    atomic_write_json(out / "results.json", {"sweep": sweep.to_dict(), "rules": ev.RULES, "evidence": assessed,
                                             "sweep_wall_time_s": result.wall_time_s,
                                             "results": [r.to_dict() for r in rows], "environment": environment()},
                      default=str)
    several = len({s.head for s in runs.settings}) > 1
    labels = {s.label(several): s for s in runs.settings}
    notes = sorted({note for r in rows for note in r.head_notes}
                   | {f"{'quantum' if r.filter == 'quantum' else 'classical control'} weight gradients on {r.backend}: "
                      f"{r.gradient}" for r in rows if r.gradient})
    seeds = runs.seeds
    seed_text = (f"{len(seeds)} seeds ({', '.join(map(str, seeds))})" if len(seeds) > 1 else
                 f"one seed ({seeds[0]}): no interval can be given, and every verdict that needs one is inconclusive")
    test_images = sorted({r.test_images for r in rows if r.test_images})
    lines = [
        f"# ResQuNN comparison: preset `{sweep.preset}`",
        "",
        f"Data: {sweep.dataset}, classes {list(sweep.classes) if sweep.classes else 'all'}, {sweep.per_class} per class "
        f"({', '.join(map(str, test_images)) or '?'} test images, so one image is "
        f"{100 / max(test_images[0], 1) if test_images else float('nan'):.1f}% of accuracy); {sweep.layers} "
        f"quanvolution layers, {' and '.join(dict.fromkeys(s.head for s in runs.settings))} head; {sweep.epochs} epochs, "
        f"batch {sweep.batch_size}, Adam lr {sweep.lr}; {seed_text}. A seed fixes the data split and the initial "
        f"weights, so a trainable run and its frozen benchmark (only the head trains) with the same seed are a pair, "
        f"and so are the same run on two backends. Sweep wall time {result.wall_time_s:.0f} s.",
        "",
        "Statistics: mean final test accuracy with its 95% Student-t interval over seeds; paired differences with the "
        "paired t-test's 95% interval and p-value (the Wilcoxon signed-rank test cannot reach p < 0.05 below 6 pairs, "
        "so with 3 to 10 seeds it could not decide). " + ev.RULES,
        "",
        *[f"- {note}" for note in notes],
        "",
        "## Checklist: which part of the model is learning?",
        "",
        "| setting | configuration | " + " | ".join(QUESTIONS) + " |",
        "|---|---|" + "---|" * len(QUESTIONS),
    ]
    for label, per_config in assessed.items():
        for config, item in per_config.items():
            lines.append(f"| {label} | `{config}` | " + " | ".join(item["verdicts"][q] for q in QUESTIONS) + " |")
    lines.append("")
    for label, per_config in assessed.items():
        lines += [f"## {label}", "",
                  "| configuration | trainable | frozen | trainable - frozen | test-set s.e. | spread over seeds (sd) | "
                  "gradient norm per layer, last epoch | layers with gradient (rule) | (measured, every seed) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for config, item in per_config.items():
            trained = runs.get(labels[label], config, False)
            norms = " / ".join(f"{sum(r.grad_norms_last_epoch[k] for r in trained) / len(trained):.2e}"
                               for k in range(sweep.layers)) if trained else "-"
            measured = item["numbers"]["measured_reach_per_seed"]
            agreed = [all(seed[k] for seed in measured) for k in range(sweep.layers)] if measured else None
            spread = item["trainable"]["std"] if item["trainable"] else None
            se = item["test_set_standard_error"]
            lines.append(f"| `{config}` | {_interval(item['trainable'])} | {_interval(item['frozen'])} | "
                         f"{_interval(item['trainable_minus_frozen'], True)} | {_fmt(se)} | {_fmt(spread)} | {norms} | "
                         f"{_layers(item['numbers']['predicted_reach'])} | {_layers(agreed)} |")
        lines.append("")
    lines += _noisy_minus_ideal(runs, several)
    lines += _quantum_beside_linear(runs)
    lines += drift_section(drift)
    lines += _shots_section(rows)
    lines += _numbers_behind(assessed)
    lines += ["## Figures", "", "![accuracy with intervals](accuracy.png)", "",
              "![paired differences](differences.png)", "", "![gradient norms](grad_norms.png)", "",
              "![training curves](curves.png)", ""]
    if len(labels) > 1:
        lines += ["![trainable accuracy by setting](ideal_vs_noisy.png)", ""]
    if noise_families(runs):
        lines += ["![accuracy against noise level](robustness.png)", ""]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines))
    comparison_figures(runs, assessed, labels, out)
    robustness_figure(runs, out)
    return report


def _numbers_behind(assessed: dict[str, Any]) -> list[str]:
    """The report's section of the numbers behind each verdict, per setting and configuration."""
    lines = ["## The numbers behind each verdict", ""]
    for label, per_config in assessed.items():
        for config, item in per_config.items():
            n, c = item["numbers"], item["numbers"]["costs"]
            head = n["quantum_head_trainable_minus_frozen"]
            lines += [
                f"**{label}, `{config}`**",
                f"- Q1: layers with gradient by the rule {_layers(n['predicted_reach'])}; measured per seed "
                f"{'; '.join(_layers(m) for m in n['measured_reach_per_seed']) or '-'}.",
                "- Q2: quantum head trainable - frozen " + (_interval(head, True) if head else
                                                           f"not in this sweep: `{n['quantum_head_command']}`") + ".",
                f"- Q3: trainable - frozen {_interval(item['trainable_minus_frozen'], True)}.",
                f"- Q4: layers connected to the head {_layers(n['predicted_reach'])}; the head "
                f"{'also sees' if n['head_sees_input'] else 'does not see'} the raw input X; final map "
                f"{'x'.join(map(str, n['final_map'])) if n['final_map'] else 'as the images give it'}.",
                f"- Q5: {', '.join(map(str, c['qubits']))} qubits per circuit; {c['boundaries']} measure-and-re-encode "
                f"boundaries per forward pass; {c['circuits_per_step']} circuits (parameter sets) per training step; "
                f"{_fmt(c['seconds_per_epoch'], '.2f')} s of simulation per epoch; on {c['device']} at {c['shots']} shots: "
                f"one epoch of training {c['device_train_epoch_circuits']} circuits, about "
                f"{_fmt(c['device_train_epoch_qpu_seconds'], '.0f')} s of QPU time; one evaluation of the test set "
                f"{c['device_test_eval_circuits']} circuits, about {_fmt(c['device_test_eval_qpu_seconds'], '.0f')} s.",
                _q6_line(n),
                "",
            ]
    return lines

def _q6_line(numbers: dict[str, Any]) -> str:
    """Q6's numbers: trainable quantum minus its classical control of the same size, paired by seed."""
    if numbers["classical_command"] is None and numbers["quantum_minus_classical"] is None:
        return "- Q6: this is the classical control (the quantum rows answer Q6)."
    if numbers["quantum_minus_classical"] is None:
        return f"- Q6: not tested, the sweep has no classical control: `{numbers['classical_command']}`."
    return (f"- Q6: trainable quantum - classical control of the same size "
            f"{_interval(numbers['quantum_minus_classical'], True)}; the control alone "
            f"{_interval(numbers['classical_control'])}.")


def _noisy_minus_ideal(runs: Runs, several: bool) -> list[str]:
    lines: list[str] = []
    for head, kind in dict.fromkeys((s.head, s.filter) for s in runs.settings):
        group = [s for s in runs.settings if (s.head, s.filter) == (head, kind)]
        ideal = next((s for s in group if not BackendSpec.coerce(s.backend).noisy), group[0])
        for other in (s for s in group if s != ideal):
            lines += [f"## {other.label(several)} minus {ideal.label(several)} (paired by seed)", "",
                      "| configuration | trainable | frozen |", "|---|---|---|"]
            for c in runs.configs:
                cells = [_interval(_dict(runs.difference((other, c, f), (ideal, c, f))), True) for f in (False, True)]
                lines.append(f"| `{c}` | {cells[0]} | {cells[1]} |")
            lines.append("")
    return lines


def _shots_section(rows: Sequence[RunResult]) -> list[str]:
    """With shots: the statement that a response estimated from shots carries correlated error across patches, and
    its check in each run (:func:`qresnet.run.evaluate.shot_validation`), averaged per backend."""
    checked: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.shot_validation is not None:
            checked.setdefault(str(r.backend), []).append(r.shot_validation)
    if not checked:
        return []
    lines = ["## Shots: the filter response from sampled design points", "",
             "Each layer's response tensor T is estimated from its 3^q sampled design points, and every patch's "
             "value is a contraction of T: the error T carries reaches every patch, so patches' errors are "
             "correlated, which sampling each patch directly would not make them (docs/design.md section 3). "
             "Every run checks this on sampled test patches of layer 1 with its trained weights, over independent "
             "shot draws, against exact values; the direct method's mean |correlation| is the floor a finite number "
             "of draws gives independent errors. Means over the runs:", "",
             "| backend | runs | shots | patches x draws | mean abs. correlation of two patches' errors, response / "
             "direct | RMS error per patch, response / direct | RMS of the error averaged over the patches, "
             "response / direct |", "|---|---|---|---|---|---|---|"]
    for backend, checks in checked.items():
        def mean(method: str, key: str) -> float:
            return sum(c[method][key] for c in checks) / len(checks)
        shots = sorted({c["shots"] for c in checks})
        lines.append(f"| {backend} | {len(checks)} | {', '.join(map(str, shots))} | {checks[0]['patches']} x "
                     f"{checks[0]['draws']} | {mean('response', 'mean_abs_error_correlation'):.2f} / "
                     f"{mean('direct', 'mean_abs_error_correlation'):.2f} | {mean('response', 'rms_error'):.4f} / "
                     f"{mean('direct', 'rms_error'):.4f} | {mean('response', 'rms_of_the_patch_mean_error'):.4f} / "
                     f"{mean('direct', 'rms_of_the_patch_mean_error'):.4f} |")
    return lines + [""]


def _quantum_beside_linear(runs: Runs) -> list[str]:
    heads = {s.head for s in runs.settings}
    if not {"quantum", "linear"} <= heads:
        return []
    lines: list[str] = []
    for backend in dict.fromkeys(s.backend for s in runs.settings):
        q, lin = Setting(backend, "quantum"), Setting(backend, "linear")
        lines += [f"## Quantum head beside the linear head, {backend}", "",
                  "| configuration | quantum trainable | quantum frozen | linear trainable | linear frozen |",
                  "|---|---|---|---|---|"]
        for c in runs.configs:
            cells = [_interval(_dict(runs.accuracy(s, c, f))) for s in (q, lin) for f in (False, True)]
            lines.append(f"| `{c}` | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _layers(flags: Sequence[bool] | None) -> str:
    if flags is None:
        return "-"
    chosen = [str(k + 1) for k, f in enumerate(flags) if f]
    return ", ".join(chosen) if chosen else "none"


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)
