"""One training run: a flat loop over a :class:`TrainConfig`, writing a run directory it can be trusted and resumed from.

    qresnet train --layers 2 --residual "O1+O2" --epochs 3 --out runs/demo
    qresnet train --resume runs/demo --epochs 5

The run directory (:class:`qresnet.run.rundir.RunDir`) holds ``config.json`` (the config, the
backend, package versions, the machine), ``metrics.csv`` (one row per epoch), ``summary.json``,
``checkpoints/epoch_NNN.pt`` and ``curves.png``. Batches are shuffled by a generator seeded from
(seed, epoch), and every checkpoint holds the model and optimizer state, so a resumed run ends
with exactly the metrics of an uninterrupted one (exact simulation; with shots the sampling
stream is not checkpointed).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from qresnet.backends import Backend, resolve_backend
from qresnet.run.build import (build_model, estimated_cost_notes, filter_notes, gradient_method, head_notes,
                               step_cost)
from qresnet.circuits import FilterSpec
from qresnet.config import SAFE_TO_CHANGE, TrainConfig
from qresnet.data import Dataset, load_dataset
from qresnet.errors import QresnetError, RunDirError, TrainingError
from qresnet.nn import ResQuNN
from qresnet.run.evaluate import encoding_noise_check, loss_and_accuracy, shot_validation
from qresnet.run.figures import plot_curves
from qresnet.provenance import environment
from qresnet.run.divergence import DivergenceWatch, check_data
from qresnet.run.integrity import check_untouched, resume_point
from qresnet.run.lock import OutputLock
from qresnet.run.result import EpochMetrics, RunResult
from qresnet.run.rundir import RunDir, atomic_write_json, identity_differences
from qresnet.run.step import StepOutcome, train_step

EVAL_BATCH = 256  # images per evaluation call on simulators


def check_identity(run: RunDir, identity: dict[str, Any], resume: bool, overwrite: bool) -> bool:
    """Refuse to train into ``run`` unless it is new, resumed with the same identity, or to be overwritten.
    Returns whether the old run must be cleared (once the new one has been built: a failure loses nothing)."""
    out = run.path
    if resume:
        check_untouched(run, "--resume")  # config.json, its identity and the checkpoints agree
        differences = identity_differences(run.read_identity(), identity)
        if differences:
            raise RunDirError(f"--resume {out}: the run was trained with other settings ({'; '.join(differences)}). "
                              f"A resume may change only {', '.join(SAFE_TO_CHANGE)}; start afresh with a new --out, or "
                              f"--overwrite {out}")
        return False
    if not run.holds_files():
        return False
    if not overwrite:
        what = "a run" if run.config_path.is_file() else "other files"
        raise RunDirError(f"{out} holds {what} already: continue it with `qresnet train --resume {out}`, replace it "
                          "with --overwrite, or choose a new --out")
    run.check_clearable()
    return True


@dataclass
class Session:
    """One session of a run: what it trains with, and where it stands (mutable as the epochs pass)."""

    config: TrainConfig
    run: RunDir
    backend: Backend
    model: ResQuNN
    optimizer: torch.optim.Optimizer
    data: Dataset
    progress: bool
    identity: dict[str, Any]  # what determines the run's numbers: stamped on every checkpoint
    start_epoch: int = 1
    start_batch: int = 0  # inside start_epoch: a device run resumed from a step checkpoint
    partial: dict[str, Any] | None = None  # that step checkpoint's running sums
    elapsed: float = 0.0  # training seconds over every session
    metrics: list[EpochMetrics] = field(default_factory=list)
    saved: int = 0  # the finished epochs whose checkpoint is on disk: where a resume would start after
    steps_taken: int = 0
    budget_hit: bool = False
    watch: DivergenceWatch | None = None  # set once the run directory exists

    @property
    def on_device(self) -> bool:
        return self.config.backend.on_device

    @property
    def eval_batch(self) -> int:
        # evaluation has no gradient, so simulators take the sets in large batches (the per-call cost dominates);
        # a device keeps the training batch, whose job sizes the run's limits were checked for
        return self.config.batch_size if self.on_device else max(self.config.batch_size, EVAL_BATCH)


@dataclass
class Tally:
    """The running sums of an epoch's steps (saved in a step checkpoint, so a device run resumes inside an epoch)."""

    began: float
    norms: torch.Tensor
    head_norm: float = 0.0
    run_loss: float = 0.0
    run_correct: int = 0
    seen: int = 0

    @classmethod
    def start(cls, layers: int, partial: dict[str, Any] | None) -> Tally:
        if partial is None:
            return cls(time.perf_counter(), torch.zeros(layers, dtype=torch.float64))
        return cls(time.perf_counter() - partial["seconds"], partial["norms"].clone(), partial["head_norm"],
                   partial["run_loss"], partial["run_correct"], partial["seen"])

    def add(self, step: StepOutcome) -> None:
        """Count one step's loss, hits and gradient norms."""
        for k, norm in enumerate(step.layer_grad_norms):
            self.norms[k] += norm
        self.head_norm += step.head_grad_norm
        self.run_loss += step.loss * step.size
        self.run_correct += step.correct
        self.seen += step.size

    def to_partial(self) -> dict[str, Any]:
        return {"norms": self.norms.clone(), "head_norm": self.head_norm, "run_loss": self.run_loss,
                "run_correct": self.run_correct, "seen": self.seen, "seconds": time.perf_counter() - self.began}


def resume_session(session: Session) -> bool:
    """Load where the run stands into the session: the newest readable checkpoint, or the initial state when no
    epoch finished (``initial.pt``, or the seed's weights when even that is missing or half-written). Returns
    whether the initial weights must be saved again (they came from the seed)."""
    run, config = session.run, session.config
    point = resume_point(run)
    for line in point.notes:
        print(f"resume: {line}", file=sys.stderr)
    if point.model is not None:
        session.model.load_state_dict(point.model)
    if point.optimizer is not None:
        session.optimizer.load_state_dict(point.optimizer)
    session.start_epoch, session.start_batch, session.partial = point.epoch, point.batch, point.partial
    session.elapsed = point.elapsed
    if session.start_epoch > config.epochs + 1:
        raise RunDirError(f"--resume {run.path}: the run has finished {session.start_epoch - 1} epochs, more than "
                          f"--epochs {config.epochs}; ask for {session.start_epoch - 1} or more")
    session.metrics = list(point.metrics)  # as the checkpoints recorded them: an edited metrics.csv is not carried
    session.saved = len(session.metrics)
    return point.from_seed


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The order of the ``n`` training images in ``epoch`` of a run seeded ``seed``: fixed by both, so a resumed
    (or replayed) epoch sees its batches as the uninterrupted one did."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def train_epoch(session: Session, epoch: int) -> Tally | None:
    """The steps of one epoch (from where a step checkpoint left off); None if ``max_steps`` ended it first."""
    config, data, run = session.config, session.data, session.run
    n = len(data.y_train)
    order = epoch_order(config.seed, epoch, n)
    batches = range(0, n, config.batch_size)
    resumed = epoch == session.start_epoch
    first = session.start_batch if resumed else 0
    tally = Tally.start(config.layers, session.partial if resumed else None)
    bar = tqdm(batches[first:], desc=f"epoch {epoch}/{config.epochs}", disable=not session.progress, leave=False,
               unit="batch", initial=first, total=len(batches))
    for start in bar:
        if config.max_steps is not None and session.steps_taken >= config.max_steps:
            session.budget_hit = True
            return None
        idx = order[start:start + config.batch_size]
        number = start // config.batch_size + 1
        try:
            step = train_step(session.model, session.optimizer, data.x_train[idx], data.y_train[idx])
        except TrainingError as exc:  # a non-finite loss: no weight moved
            raise session.watch.stop(str(exc), epoch, number) from None
        session.watch.loss(step.loss, epoch, number)
        session.watch.step(session.model, epoch, number)
        tally.add(step)
        bar.set_postfix(loss=f"{tally.run_loss / tally.seen:.3f}", acc=f"{tally.run_correct / tally.seen:.3f}")
        session.steps_taken += 1
        if session.on_device:  # a dropped session loses at most the step in flight
            run.save_checkpoint({"model": session.model.state_dict(), "optimizer": session.optimizer.state_dict(),
                                 "epoch": epoch, "batch": number, "elapsed": session.elapsed,
                                 "config": config.to_dict(), "partial": tally.to_partial()}, run.step_checkpoint,
                                identity=session.identity, history=session.metrics)
    return tally


def record_epoch(session: Session, epoch: int, tally: Tally,
                 evaluated: tuple[tuple[float, float], tuple[float, float]] | None = None) -> None:
    """Evaluate both sets (or take ``evaluated``, their (loss, accuracy) pairs from a stack's joint evaluation),
    append the epoch's metrics, write them and the epoch checkpoint, prune the old ones."""
    config, data, run, model = session.config, session.data, session.run, session.model
    if evaluated is None:
        evaluated = (loss_and_accuracy(model, data.x_train, data.y_train, session.eval_batch),
                     loss_and_accuracy(model, data.x_test, data.y_test, session.eval_batch))
    (train_loss, train_acc), (test_loss, test_acc) = evaluated
    session.watch.evaluation({"training-set loss": train_loss, "test-set loss": test_loss}, epoch)
    seconds = time.perf_counter() - tally.began
    session.elapsed += seconds
    steps = len(range(0, len(data.y_train), config.batch_size))
    row = EpochMetrics(epoch, train_loss, train_acc, test_loss, test_acc, seconds,
                       tuple(float(tally.norms[k]) / steps for k in range(config.layers)), tally.head_norm / steps)
    session.metrics.append(row)
    # metrics first: a checkpoint always has its row, and a row without one is trained again on resume
    run.write_metrics(session.metrics)
    run.save_checkpoint({"model": model.state_dict(), "optimizer": session.optimizer.state_dict(), "epoch": epoch,
                         "elapsed": session.elapsed, "config": config.to_dict()}, run.epoch_checkpoint(epoch),
                        identity=session.identity, history=session.metrics)
    session.saved = epoch
    best = max(session.metrics, key=lambda m: m.test_acc).epoch  # the first epoch reaching the best accuracy
    run.prune_checkpoints(config.keep_checkpoints, best)
    if session.progress:
        print(f"epoch {epoch}: train loss {train_loss:.4f} acc {train_acc:.3f} | test loss {test_loss:.4f} "
              f"acc {test_acc:.3f} | grad norms " + " ".join(f"{g:.2e}" for g in row.grad_norm_layers)
              + f" | {seconds:.1f} s")


def run_epochs(session: Session, stop_after_epoch: int | None) -> None:
    """Every remaining epoch; an interruption keeps the finished ones, a failed device run says how to resume."""
    out = session.run.path
    try:
        for epoch in range(session.start_epoch, session.config.epochs + 1):
            tally = train_epoch(session, epoch)
            if tally is None:
                break
            record_epoch(session, epoch, tally)
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                break
    except KeyboardInterrupt:
        done = session.saved  # not len(metrics): an interrupt can land between a row and its checkpoint
        saved = "no epoch finished yet" if not done else "epoch 1 is saved" if done == 1 else f"epochs 1-{done} are saved"
        print(f"\ninterrupted during epoch {done + 1}: {saved} in {out}; continue with "
              f"`qresnet train --resume {out}`", file=sys.stderr)
        raise
    except QresnetError:
        raise
    except Exception as exc:  # a dropped Runtime session, an expired token, a failed job
        if not session.on_device:
            raise
        raise TrainingError(f"the device run stopped ({type(exc).__name__}: {exc}); every finished step is saved in "
                            f"{session.run.checkpoints}: continue with `qresnet train --resume {out}`") from None


def train(
    config: TrainConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after_epoch: int | None = None,
    data: Dataset | None = None,
    service: Any = None,
    overwrite: bool = False,
) -> RunResult:
    """Run (or resume) training; returns its result. ``stop_after_epoch`` ends early, as an interruption would.

    A directory that holds a run is never trained into silently: ``resume`` continues it only if
    its identity (every value that determines its numbers, :meth:`TrainConfig.identity`) is
    unchanged, ``overwrite`` replaces it, and anything else is refused. The run directory is locked for
    the whole run (:class:`OutputLock`): a second process on it refuses.

    On ``local:`` and ``ibm:`` backends the cost of a step is printed first, the state is saved
    after every step (``checkpoints/step.pt``), and ``max_steps`` bounds the steps of this session.
    ``service`` stands in for ``QiskitRuntimeService`` (tests).
    """
    run = RunDir(out_dir) if out_dir is not None else RunDir.new()
    with OutputLock(run.path):
        return _train_locked(config, run, resume, progress, stop_after_epoch, data, service, overwrite)


def _train_locked(config: TrainConfig, run: RunDir, resume: bool, progress: bool, stop_after_epoch: int | None,
                  data: Dataset | None, service: Any, overwrite: bool) -> RunResult:
    """:func:`train`, with its run directory locked."""
    torch.set_num_threads(config.torch_threads)
    data = data or load_dataset(config.data_config())
    check_data(data)
    identity = config.identity(data.digest())
    replace = check_identity(run, identity, resume, overwrite)
    backend = resolve_backend(config.backend, config.backend_options, service=service)
    model = build_model(config, backend, data.image_shape, data.num_classes)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    session = Session(config, run, backend, model, optimizer, data, progress, identity)
    from_seed = resume_session(session) if resume else False
    notes = head_notes(config, backend, model)
    if progress:
        if config.quanv != FilterSpec() or config.filter != "quantum" or config.mode == "auto":
            for line in filter_notes(config, backend, data.image_shape):
                print(line)
        for line in estimated_cost_notes(model, config, len(data.y_train)):
            print(line)
        if session.on_device:
            print(step_cost(model, backend, config.batch_size, data.image_shape).describe(config.max_steps or 1))
        for note in notes:
            print(note)
    if replace:
        run.clear()
    open_run_dir(session, notes, save_initial=not resume or from_seed)
    rows_before = backend.rows_evaluated()
    run_epochs(session, stop_after_epoch)
    if session.budget_hit and progress:
        print(f"max_steps={config.max_steps} reached: state saved in {run.step_checkpoint}; "
              f"continue with `qresnet train --resume {run.path}`")
    evaluated = None if rows_before is None else backend.rows_evaluated() - rows_before
    return finish(session, notes, evaluated)


def open_run_dir(session: Session, notes: list[str], save_initial: bool) -> None:
    """The run directory, made only now (a run that cannot start leaves nothing behind): its checkpoint folder,
    ``config.json``, then the initial weights of a fresh run (after config.json: a run killed from here on is
    resumable from its initial state), and the step checks."""
    run, config, model, data = session.run, session.config, session.model, session.data
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    run.remove_tmp_files()
    run.write_config({"config": config.to_dict(), "identity": session.identity, "backend": session.backend.describe(),
                      "gradient": gradient_method(model), "head_notes": notes,
                      "data": {"source": data.source, "train": len(data.y_train), "test": len(data.y_test),
                               "classes": list(data.classes), "image_shape": list(data.image_shape)},
                      "environment": environment()})
    if save_initial:  # the initial weights: a trainable run and its frozen pair (same seed) start from these
        run.save_checkpoint({"model": model.state_dict(), "config": config.to_dict()}, run.initial_checkpoint,
                            identity=session.identity)
    session.watch = DivergenceWatch(data.num_classes, config.lr, run.checkpoints)


def finish(session: Session, notes: list[str], evaluated: int | None) -> RunResult:
    """The run's result (``summary.json``) with the head's encoding check when asked for and, with shots, what
    they do to the filter response (:func:`shot_validation`); and the curves (unless ``config.curves`` is off)."""
    config, run, data = session.config, session.run, session.data
    noise = None
    if config.head == "quantum" and config.head_encoding_noise == "transpiled" and session.metrics:
        noise = encoding_noise_check(session.model, session.backend, data, config.head_noise_samples, config.seed)
        atomic_write_json(run.head_noise_path, noise)
    shots = shot_validation(session.model, session.backend, data, config.seed) if session.metrics else None
    result = RunResult(
        backend=config.backend, head=config.head, residual=config.residual, frozen=config.frozen, seed=config.seed,
        epochs=config.epochs, metrics=tuple(session.metrics), train_images=len(data.y_train),
        test_images=len(data.y_test), gradient=gradient_method(session.model), run_dir=str(run.path),
        wall_time_s=session.elapsed, head_notes=tuple(notes), steps_this_session=session.steps_taken,
        stopped_at_max_steps=session.budget_hit, parameter_sets_evaluated_this_session=evaluated,
        head_encoding_noise=noise, shot_validation=shots, filter=config.filter)
    run.write_summary(result)
    if session.metrics and config.curves:
        plot_curves(session.metrics, run.curves_path)
    return result
