"""Stacked training: K runs of one model shape in one process, each layer's engine work one call per step.

    results = train_stack([config_seed0, config_seed1, config_seed0_frozen], [dir_a, dir_b, dir_c])

The runs of a stack share everything but their seed (data split, batch order, initial weights), their frozen flag
and their residual configuration (:func:`stack_key`: the layers are the same, only the skips between them differ).
A step is one computation (:func:`stacked_step`):

- every quanvolution layer evaluates its design points for all the trainable runs' weights in ONE engine
  call (:func:`qresnet.qnn.stacked_qnn`, the engine's segmented pullback for the backward: each run's weights
  get the gradient of their own rows only);
- a frozen run's layers never change: its final maps of both sets are computed once, when the stack starts
  (:func:`fix_maps`), and its steps and evaluations run its head only;
- the other runs' batches go through the layers as ONE batch per residual configuration, run-major, each run's
  part contracted with its own response tensor (:meth:`QuanvLayer.fix_response` with a run axis), residuals
  and all;
- each run's head takes its part of the final map; quantum heads of one shape are ONE engine call
  (:func:`qresnet.nn.stacked_head_logits`);
- the loss is the sum of the runs' mean losses, so one backward gives each run the gradient of its own loss,
  and one Adam over every run's parameters (:func:`joint_optimizer`, each run's state in its own optimizer)
  steps each run exactly as alone;
- each epoch's evaluation of both sets is stacked the same way.

Layers that are not response-mode quanvolutions (classical controls, per-patch layers) run model by model: the
stack is then correct, only not faster.

Each run keeps its run directory, identity, lock, checkpoints, metrics and curves through the pieces of
:mod:`qresnet.run.train` (``Session``, ``resume_session``, ``open_run_dir``, ``record_epoch``, ``finish``).
Resuming: each run resumes from its own newest checkpoint; in each epoch the runs at that epoch train
together, and a run further along joins when the stack reaches its epoch (runs are stacked only at the same
point). A run that fails (bad data, a non-finite loss, a changed identity) is reported and leaves the stack;
the others finish.

Numbers equal the one-run path to rounding, not bit for bit: the same exact values and derivatives, summed in
another order (a batched product, a segmented pullback).
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from qresnet.backends import Backend, resolve_backend
from qresnet.config import TrainConfig
from qresnet.data import Dataset, load_dataset
from qresnet.errors import ConfigError, QresnetError, TrainingError
from qresnet.nn import QuantumHead, QuanvLayer, ResQuNN, combine, stacked_head_logits
from qresnet.qnn import response_tensor, stacked_qnn, stacks
from qresnet.run.build import build_model, head_notes
from qresnet.run.divergence import all_finite, check_data
from qresnet.run.evaluate import stacked_loss_and_accuracy
from qresnet.run.lock import OutputLock
from qresnet.run.result import RunResult
from qresnet.run.rundir import RunDir
from qresnet.run.step import StepOutcome, measured_runs
from qresnet.run.train import (Session, Tally, check_identity, epoch_order, finish, open_run_dir, record_epoch,
                               resume_session)

VARYING = ("seed", "frozen", "residual")  # what may differ between the runs of a stack
RUN_BYTES = 64 << 20  # the memory one more run takes in a stack, rounded up from benchmarks/sweep.py (README)
MAX_STACK = 16  # past this the step's arrays, not its calls, set its time (README)
MEMORY_SHARE = 0.5  # of the available memory, for the stacks of a sweep
MAP_IMAGES = 512  # images of all runs per stacked layer call (map_chunk)
# images a run per evaluation call of a stack's heads (its layers take them in parts): each quantum head has its
# own call, and 4x fewer calls took a paper stack's evaluation from 1.45-1.64 s to 1.35 s (ideal, fake_torino)
EVAL_HEAD_BATCH = 1024


def stack_key(config: TrainConfig) -> str:
    """What the runs of one stack share: the config less its seed, frozen flag and residual configuration (the
    layers are the same; only the skips between them differ), as a comparable string."""
    values = config.to_dict()
    # the backend's seed follows the run's; it seeds shot sampling only, and a stack is exact (no shots)
    values["backend_options"] = {k: v for k, v in values["backend_options"].items() if k != "seed"}
    return repr(sorted((k, repr(v)) for k, v in values.items() if k not in VARYING))


def stackable(config: TrainConfig) -> bool:
    """Whether a run may join a stack: an exact simulation trained by epochs (not a device, shots, or max_steps)."""
    return not config.backend.on_device and config.backend_options.shots is None and config.max_steps is None


def available_memory() -> int:
    """Bytes this machine can still give (MemAvailable; the free pages where /proc is missing)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return 1 << 30


def default_stack_size(runs: int, jobs: int, available: int | None = None) -> int:
    """K (trainable runs a stack, :func:`qresnet.study.sweep.plan_stacks`) for ``runs`` unfinished trainable runs in
    ``jobs`` processes: as many as half the available memory holds per process at :data:`RUN_BYTES` a run, at most
    :data:`MAX_STACK`, and no more than spreads the runs over every process."""
    jobs = max(1, jobs)
    budget = (available_memory() if available is None else available) * MEMORY_SHARE // jobs
    return max(1, min(MAX_STACK, budget // RUN_BYTES, -(-runs // jobs)))


@dataclass
class Member:
    """One run of a stack: its session and notes once set up, or why it failed."""

    config: TrainConfig
    directory: Path
    session: Session | None = None
    notes: list[str] | None = None
    failure: QresnetError | None = None
    # a run whose layers do not train: the final maps of its training and test sets, computed once, so that its
    # steps and evaluations run its head only (:func:`fix_maps`)
    maps: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def alive(self) -> bool:
        return self.failure is None and self.session is not None


def _set_up(member: Member, backend: Backend, data: Dataset | None) -> None:
    """The run's session as ``train`` opens it: data checked, identity checked, model built, resumed if started,
    run directory opened. A problem of this run's own becomes its failure."""
    config = member.config
    try:
        data = data or load_dataset(config.data_config())
        check_data(data)
        identity = config.identity(data.digest())
        run = RunDir(member.directory)
        resume = run.started()
        check_identity(run, identity, resume, overwrite=False)  # a sweep clears the runs it retrains first
        model = build_model(config, backend, data.image_shape, data.num_classes)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
        session = Session(config, run, backend, model, optimizer, data, False, identity)
        from_seed = resume_session(session) if resume else False
        notes = head_notes(config, backend, model)
        open_run_dir(session, notes, save_initial=not resume or from_seed)
        member.session, member.notes = session, notes
    except QresnetError as exc:
        member.failure = exc


def _responses(models: list, j: int) -> torch.Tensor:
    """Layer ``j``'s response tensors of every model, stacked (R, 3, ..., 3, C). The trainable one-filter layers
    on the engine's exact gradient come from ONE engine call for all of them (:func:`stacked_qnn`, differentiable
    in each run's weights); any other layer gives its own (a frozen layer's values are memoised by its
    connector, so a frozen run's filters cost one engine call per run, not one per step)."""
    column = [m.layers[j] for m in models]
    tensors: list[torch.Tensor | None] = [None] * len(column)
    joint = [i for i, l in enumerate(column) if l.weight.requires_grad and l.filters == 1 and stacks(l.qnn)]
    if joint:
        first = column[joint[0]]
        values = stacked_qnn(first.qnn, first.design_inputs, [column[i].weight for i in joint])  # (S, 3^q, K)
        for i, t in zip(joint, response_tensor(values, first.template.num_inputs)):
            tensors[i] = t
    return torch.stack([l.response() if t is None else t for l, t in zip(column, tensors)])


def stack_responses(models: list) -> list[torch.Tensor] | None:
    """Every layer's stacked response tensors (:func:`_responses`), or None where a layer is not a response-mode
    quanvolution (the models then run one by one)."""
    if not all(isinstance(l, QuanvLayer) and l.mode == "response" for l in models[0].layers):
        return None
    return [_responses(models, j) for j in range(len(models[0].layers))]


def stacked_maps(models: list, inputs: list[torch.Tensor], responses: list[torch.Tensor] | None = None
                 ) -> list[torch.Tensor]:
    """Every model's final map of its own batch (equal sizes), flattened for its head. Models whose layers are all
    response-mode quanvolutions (one shape: the same layers, whatever their residual configuration) run layer by
    layer as ONE call per layer and input shape: the batches of every model whose layer input has that shape,
    concatenated run-major, through the first model's layer with each run's response tensor (``responses``, from
    :func:`stack_responses` when not given; an evaluation passes them once for all its batches) fixed
    (:meth:`QuanvLayer.fix_response` with a run axis); each configuration then combines its own skips
    (:func:`combine`). Layer 1 reads the images in every configuration, so it is one call for the stack. Others
    (classical controls, per-patch layers) run one by one."""
    responses = stack_responses(models) if responses is None else responses
    if responses is None:
        return [m.features(x).flatten(1) for m, x in zip(models, inputs)]
    by_residual: dict[Any, list[int]] = {}
    for i, m in enumerate(models):
        by_residual.setdefault(m.residual, []).append(i)
    groups = list(by_residual.values())
    carrier = models[0]
    nodes = []  # per configuration: its nodes h_0 .. h_k, its members' batches concatenated run-major
    for members in groups:
        nodes.append([ResQuNN.input_node(torch.cat([inputs[i] for i in members]))])
    for k, layer in enumerate(carrier.layers, start=1):
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for g, own in enumerate(nodes):
            by_shape.setdefault(tuple(own[k - 1].shape[1:]), []).append(g)
        for same in by_shape.values():
            order = [i for g in same for i in groups[g]]
            whole = order == list(range(len(models)))
            layer.fix_response(responses[k - 1] if whole else responses[k - 1][torch.tensor(order)])
            try:
                outputs = layer(torch.cat([nodes[g][k - 1] for g in same]))
            finally:
                layer.fix_response(None)
            for g, output in zip(same, outputs.split([len(nodes[g][k - 1]) for g in same])):
                nodes[g].append(combine(models[groups[g][0]].residual, k, output, nodes[g], carrier.padding))
    maps: list[torch.Tensor] = [torch.empty(0)] * len(models)
    for members, own in zip(groups, nodes):
        for i, f in zip(members, own[-1].split([len(inputs[i]) for i in members])):
            maps[i] = f.flatten(1)
    return maps


def head_logits(models: list, maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each model's head on its own flattened final map: quantum heads through :func:`stacked_head_logits`, the
    linear heads of each shape as one batched product (each head's weights get the gradient of its own logits
    only), others one by one."""
    heads = [m.head for m in models]
    if all(isinstance(h, QuantumHead) for h in heads):
        return stacked_head_logits(heads, maps)
    out: list[torch.Tensor] = [torch.empty(0)] * len(heads)
    shapes: dict[Any, list[int]] = {}  # linear heads by shape (a residual configuration's final map has its own)
    for i, (h, f) in enumerate(zip(heads, maps)):
        if type(h) is torch.nn.Linear and h.bias is not None:
            shapes.setdefault((h.weight.shape, f.shape), []).append(i)
        else:
            out[i] = h(f)
    for same in shapes.values():
        weight = torch.stack([heads[i].weight for i in same])  # (R, C, F)
        bias = torch.stack([heads[i].bias for i in same])[:, None, :]  # (R, 1, C)
        for i, logits in zip(same, torch.baddbmm(bias, torch.stack([maps[i] for i in same]),
                                                 weight.transpose(1, 2)).unbind(0)):
            out[i] = logits
    return out


def stacked_logits(models: list, inputs: list[torch.Tensor], responses: list[torch.Tensor] | None = None,
                   mapped: Collection[int] = ()) -> list[torch.Tensor]:
    """Every model's logits on its own batch (equal sizes): :func:`stacked_maps`, then :func:`head_logits`. The
    inputs of the models at the indices ``mapped`` are already their final maps (a run whose layers do not train:
    :func:`fix_maps`), so only their heads run; ``responses`` are the other models'. The layers take the batches
    in parts of :func:`map_chunk` images a run (an evaluation's large batches), the heads whole."""
    through = [i for i in range(len(models)) if i not in mapped]
    maps = list(inputs)
    if through:
        computed = maps_in_parts([models[i] for i in through], [inputs[i] for i in through], responses)
        for i, f in zip(through, computed):
            maps[i] = f
    return head_logits(models, maps)


def maps_in_parts(models: list, inputs: list[torch.Tensor], responses: list[torch.Tensor] | None = None
                  ) -> list[torch.Tensor]:
    """:func:`stacked_maps` of equal-sized batches, in parts of :func:`map_chunk` images a run (the responses once
    for every part)."""
    responses = stack_responses(models) if responses is None else responses
    chunk = map_chunk(len(models))
    parts = [stacked_maps(models, [x[start:start + chunk] for x in inputs], responses)
             for start in range(0, len(inputs[0]), chunk)]
    return [column[0] if len(column) == 1 else torch.cat(column) for column in zip(*parts)]


def map_chunk(runs: int) -> int:
    """Images a run per stacked layer call: :data:`MAP_IMAGES` shared by ``runs`` runs. The layers stream their
    arrays a few times a call, and large arrays leave the cache: a stack's evaluation (paper preset, 15 runs
    through their layers) took 1.24x to 1.28x as long with the layers on its batches of 256 images a run as in
    parts of 512 images in all (the values are the same: each image's map is its own)."""
    return max(1, MAP_IMAGES // runs)


def layers_fixed(model: ResQuNN) -> bool:
    """Whether nothing before the model's head trains (a frozen run): its final map of an image never changes."""
    return not any(p.requires_grad for p in model.layers.parameters())


def fixed_maps(models: list, sets: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each model's flattened final maps of its own set of images, without gradients: stacked
    (:func:`maps_in_parts`) where the sets have one size, model by model where not."""
    if len({len(x) for x in sets}) != 1:
        return [fixed_maps([m], [x])[0] for m, x in zip(models, sets)]
    with torch.no_grad():
        return maps_in_parts(models, sets)


def joint_optimizer(sessions: list[Session]) -> torch.optim.Optimizer:
    """One Adam over every session's parameters, holding each parameter's state in the session optimizer's own
    dict (the same object): one step moves every run exactly as its own Adam would (Adam is elementwise, each
    parameter's step count and moments its own; the multi-tensor kernels do per tensor the arithmetic of the
    single-tensor ones, bit for bit on CPU, tests/test_stack.py), and each session's optimizer still checkpoints,
    and resumes, its own state. The sessions' groups with equal settings (a stack's runs share their learning
    rate) are one group: a few kernel calls per step for the whole stack instead of a few per run. A parameter
    without a gradient (a failed run's) does not move."""
    merged: dict[tuple, dict[str, Any]] = {}
    for s in sessions:
        for group in s.optimizer.param_groups:
            settings = {**{k: v for k, v in group.items() if k != "params"}, "foreach": True}
            key = tuple(sorted(settings.items()))
            merged.setdefault(key, {**settings, "params": []})["params"].extend(group["params"])
    joint = torch.optim.Adam(list(merged.values()))
    for s in sessions:
        for group in s.optimizer.param_groups:
            for p in group["params"]:
                joint.state[p] = s.optimizer.state[p]  # a defaultdict: the session's dict, made if new
    return joint


def stacked_step(sessions: list[Session], batches: list[tuple[torch.Tensor, torch.Tensor]],
                 optimizer: torch.optim.Optimizer | None = None, mapped: Collection[int] = ()
                 ) -> list[StepOutcome | TrainingError]:
    """One optimizer step of every session on its own batch, as one computation (:func:`stacked_logits`; the
    loss is the sum of the runs' mean losses, so one backward gives each run the gradient of its own loss, and
    ``optimizer``, the sessions' :func:`joint_optimizer`, steps each run exactly as alone): per session its
    :class:`StepOutcome`, or the :class:`TrainingError` of a non-finite loss (that session's weights do not move).
    The batches at the indices ``mapped`` hold their images' final maps (:func:`fix_maps`)."""
    optimizer = optimizer or joint_optimizer(sessions)
    optimizer.zero_grad()
    all_logits = stacked_logits([s.model for s in sessions], [x for x, _ in batches], mapped=mapped)
    outcomes: list[float | TrainingError] = []  # a run's loss value, or why it stops
    losses = []
    ys = [y for _, y in batches]
    per_run, correct = _losses_and_correct(all_logits, ys)
    for loss, value in zip(per_run, torch.stack(per_run).tolist()):
        if not math.isfinite(value):
            outcomes.append(TrainingError(f"the loss became {value}"))
            continue
        outcomes.append(value)
        losses.append(loss)
    if losses:
        torch.stack(losses).sum().backward()  # runs are independent: each weight gets its own run's gradient
    stepped = [(s.model, o, right, len(y)) for s, o, right, y in zip(sessions, outcomes, correct, ys)
               if not isinstance(o, TrainingError)]
    measures = iter(measured_runs(*zip(*stepped)) if stepped else [])
    out = [o if isinstance(o, TrainingError) else next(measures) for o in outcomes]
    optimizer.step()
    return out


def _losses_and_correct(logits: list[torch.Tensor], ys: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[int]]:
    """Each run's mean cross-entropy on its batch (:func:`qresnet.run.step.finite_loss` without its check) and its
    count of right predictions: one call each for a stack whose batches have one shape."""
    if len({lg.shape for lg in logits}) != 1 or len({y.shape for y in ys}) != 1:
        return ([torch.nn.functional.cross_entropy(lg, y) for lg, y in zip(logits, ys)],
                [int((lg.argmax(1) == y).sum()) for lg, y in zip(logits, ys)])
    stacked, targets = torch.stack(logits), torch.stack(ys)  # (R, B, C), (R, B)
    per_image = torch.nn.functional.cross_entropy(stacked.reshape(-1, stacked.shape[-1]), targets.reshape(-1),
                                                  reduction="none")
    return (list(per_image.view(len(logits), -1).mean(1).unbind(0)),
            (stacked.argmax(-1) == targets).sum(-1).tolist())


def _train_stack_epoch(members: list[Member], epoch: int) -> list[tuple[Member, Tally]]:
    """The steps of one epoch for the members at this epoch; returns the ones still alive, with their tallies."""
    active = [m for m in members if m.alive and m.session.start_epoch <= epoch]
    if not active:
        return []
    sizes = {(len(m.session.data.y_train), m.config.batch_size) for m in active}
    if len(sizes) != 1:
        raise ConfigError(f"the runs of a stack need one training-set size and batch size, got {sorted(sizes)}")
    n, batch = sizes.pop()
    orders = [epoch_order(m.config.seed, epoch, n) for m in active]  # each run its own batches, as alone
    tallies = [Tally.start(m.config.layers, None) for m in active]
    joint, joined = None, None
    for start in range(0, n, batch):
        number = start // batch + 1
        live = [i for i, m in enumerate(active) if m.alive]
        if not live:
            break
        if live != joined:  # once an epoch, and again when a run leaves the stack
            joint, joined = joint_optimizer([active[i].session for i in live]), live
        batches = []
        for i in live:
            idx = orders[i][start:start + batch]
            data, maps = active[i].session.data, active[i].maps
            batches.append((data.x_train[idx] if maps is None else maps[0][idx], data.y_train[idx]))
        mapped = [k for k, i in enumerate(live) if active[i].maps is not None]
        outcomes = stacked_step([active[i].session for i in live], batches, joint, mapped)
        # the gradients' norms are the step's own (StepOutcome); the weights the step moved (the joint optimizer's:
        # a frozen layer's never move), in one call for the stack
        finite = all(isinstance(o, StepOutcome) and math.isfinite(o.head_grad_norm)
                     and all(math.isfinite(n) for n in o.layer_grad_norms) for o in outcomes) and all_finite(
            p for group in joint.param_groups for p in group["params"])
        for i, outcome in zip(live, outcomes):
            member, tally = active[i], tallies[i]
            session = member.session
            try:
                if isinstance(outcome, TrainingError):
                    raise session.watch.stop(str(outcome), epoch, number)
                session.watch.loss(outcome.loss, epoch, number)
                if not finite:
                    session.watch.step(session.model, epoch, number)
            except TrainingError as exc:
                member.failure = exc
                continue
            tally.add(outcome)
            session.steps_taken += 1
    return [(m, t) for m, t in zip(active, tallies) if m.alive]


def fix_maps(members: list[Member]) -> None:
    """Set the final maps of both sets of every live member whose layers do not train (:func:`layers_fixed`),
    stacked (:func:`fixed_maps`): the same values its layers would give at every step."""
    fixed = [m for m in members if m.alive and m.maps is None and layers_fixed(m.session.model)]
    if not fixed:
        return
    models = [m.session.model for m in fixed]
    train_maps = fixed_maps(models, [m.session.data.x_train for m in fixed])
    test_maps = fixed_maps(models, [m.session.data.x_test for m in fixed])
    for member, train_map, test_map in zip(fixed, train_maps, test_maps):
        member.maps = (train_map, test_map)


def _evaluate(members: list[Member]) -> list[tuple[tuple[float, float], tuple[float, float]] | None]:
    """Each member's (training-set, test-set) loss and accuracy from one stacked forward per batch, as
    ``record_epoch`` would measure them run by run; None (``record_epoch`` measures it alone) where the sets'
    sizes differ."""
    if not members:
        return []
    sessions = [m.session for m in members]
    data = [s.data for s in sessions]
    if len({(len(d.y_train), len(d.y_test)) for d in data}) != 1:
        return [None] * len(members)
    models = [s.model for s in sessions]
    batch = max(sessions[0].eval_batch, EVAL_HEAD_BATCH)
    mapped = [i for i, m in enumerate(members) if m.maps is not None]
    with torch.no_grad():  # the weights do not move while the sets are evaluated: responses once, not a batch
        through = [m for i, m in enumerate(models) if i not in mapped]
        responses = stack_responses(through) if through else None

    def logits_of(inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        return stacked_logits(models, inputs, responses, mapped)
    sets = [(d.x_train, d.x_test) if m.maps is None else m.maps for d, m in zip(data, members)]
    train_set = stacked_loss_and_accuracy(logits_of, [s[0] for s in sets], [d.y_train for d in data], batch)
    test_set = stacked_loss_and_accuracy(logits_of, [s[1] for s in sets], [d.y_test for d in data], batch)
    return list(zip(train_set, test_set))


def train_stack(configs: Sequence[TrainConfig], directories: Sequence[str | Path],
                data: Sequence[Dataset | None] | None = None, stop_after_epoch: int | None = None
                ) -> list[RunResult | QresnetError]:
    """Train (or resume) the runs ``configs`` into ``directories`` as one stack; per run its result, or the error
    that stopped it (the others finish). ``stop_after_epoch`` ends early, as an interruption would."""
    configs = list(configs)
    if not configs or len(directories) != len(configs) or (data is not None and len(data) != len(configs)):
        raise ConfigError(f"train_stack takes one directory (and dataset) per config: {len(configs)} configs, "
                          f"{len(directories)} directories")
    keys = {stack_key(c) for c in configs}
    if len(keys) != 1:
        raise ConfigError("the runs of a stack may differ only in seed, frozen flag and residual configuration")
    first = configs[0]
    if first.max_steps is not None or first.backend.on_device or first.backend_options.shots is not None:
        raise ConfigError("a stack trains exact simulations by epochs: run device runs, shots or max_steps alone")
    torch.set_num_threads(first.torch_threads)
    members = [Member(c, Path(d)) for c, d in zip(configs, directories)]
    with ExitStack() as locks:
        for member in members:
            locks.enter_context(OutputLock(member.directory))
        backend = resolve_backend(first.backend, first.backend_options)  # one backend: one engine, one cache
        for member, d in zip(members, data or [None] * len(members)):
            _set_up(member, backend, d)
        fix_maps(members)
        started = [m.session.start_epoch for m in members if m.alive]
        for epoch in range(min(started, default=first.epochs + 1), first.epochs + 1):
            trained = _train_stack_epoch(members, epoch)
            for (member, tally), evaluated in zip(trained, _evaluate([m for m, _ in trained])):
                try:
                    record_epoch(member.session, epoch, tally, evaluated)
                except QresnetError as exc:
                    member.failure = exc
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                break
        out: list[RunResult | QresnetError] = []
        for member in members:
            if not member.alive:
                out.append(member.failure)
                continue
            try:
                out.append(finish(member.session, member.notes, None))
            except QresnetError as exc:
                out.append(exc)
        return out
