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

import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from qresnet.backends import resolve_backend
from qresnet.run.build import build_model, estimated_cost_notes, gradient_method, head_notes, step_cost
from qresnet.config import SAFE_TO_CHANGE, TrainConfig
from qresnet.data import Dataset, load_dataset
from qresnet.errors import QresnetError, RunDirError, TrainingError
from qresnet.run.divergence import DivergenceWatch, check_data
from qresnet.run.evaluate import encoding_noise_check, loss_and_accuracy
from qresnet.run.figures import plot_curves
from qresnet.run.integrity import check_untouched, resume_point
from qresnet.run.lock import OutputLock
from qresnet.provenance import environment
from qresnet.run.rundir import RunDir, atomic_write_json, identity_differences

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


def train(
    config: TrainConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after_epoch: int | None = None,
    data: Dataset | None = None,
    service: Any = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run (or resume) training; returns the summary. ``stop_after_epoch`` ends early, as an interruption would.

    The run directory is locked for the whole run (:class:`OutputLock`): a second process on it refuses.
    """
    out = RunDir(out_dir).path if out_dir is not None else RunDir.new().path
    with OutputLock(out):
        return _train_locked(config, out, resume, progress, stop_after_epoch, data, service, overwrite)


def _train_locked(
    config: TrainConfig,
    out_dir: Path,
    resume: bool = False,
    progress: bool = True,
    stop_after_epoch: int | None = None,
    data: Dataset | None = None,
    service: Any = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """:func:`train`, with its run directory locked.

    A directory that holds a run is never trained into silently: ``resume`` continues it only if
    its identity (every value that determines its numbers, :meth:`TrainConfig.identity`) is
    unchanged, ``overwrite`` replaces it, and anything else is refused.

    On ``local:`` and ``ibm:`` backends the cost of a step is printed first, the state is saved
    after every step (``checkpoints/step.pt``), and ``max_steps`` bounds the steps of this session.
    ``service`` stands in for ``QiskitRuntimeService`` (tests).
    """
    torch.set_num_threads(config.torch_threads)
    run = RunDir(out_dir)
    out = run.path
    on_device = config.backend.on_device
    # evaluation has no gradient, so simulators take the sets in large batches (the per-call cost dominates);
    # a device keeps the training batch, whose job sizes the run's limits were checked for
    eval_batch = config.batch_size if on_device else max(config.batch_size, EVAL_BATCH)
    data = data or load_dataset(config.data_config())
    check_data(data)
    identity = config.identity(data.digest())
    replace = check_identity(run, identity, resume, overwrite)
    backend = resolve_backend(config.backend, config.backend_options, service=service)
    model = build_model(config, backend, data.image_shape, data.num_classes)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    metrics: list[dict[str, float]] = []
    point = resume_point(run) if resume else None  # the newest state, or the initial one if no epoch finished
    start_epoch, start_batch, elapsed, partial = 1, 0, 0.0, None
    if point is not None:
        for line in point.notes:
            print(f"resume: {line}", file=sys.stderr)
        if point.model is not None:
            model.load_state_dict(point.model)
        if point.optimizer is not None:
            optimizer.load_state_dict(point.optimizer)
        start_epoch, start_batch, partial, elapsed = point.epoch, point.batch, point.partial, point.elapsed
        if start_epoch > config.epochs + 1:
            raise RunDirError(f"--resume {out}: the run has finished {start_epoch - 1} epochs, more than --epochs "
                              f"{config.epochs}; ask for {start_epoch - 1} or more")
        metrics = list(point.metrics)  # as the checkpoint recorded them: an edited metrics.csv is not carried
    if progress:
        for line in estimated_cost_notes(model, config, len(data.y_train)):
            print(line)
    if on_device and progress:
        print(step_cost(model, backend, config.batch_size).describe(config.max_steps or 1))
    notes = head_notes(config, backend, model)
    gradient = gradient_method(model)
    if progress:
        for note in notes:
            print(note)
    if replace:
        run.clear()
    run.checkpoints.mkdir(parents=True, exist_ok=True)  # only now: a run that cannot start leaves nothing behind
    run.remove_tmp_files()
    run.write_config({"config": config.to_dict(), "identity": identity, "backend": backend.describe(), "gradient": gradient,
                      "head_notes": notes,
                      "data": {"source": data.source, "train": len(data.y_train), "test": len(data.y_test),
                               "classes": list(data.classes), "image_shape": list(data.image_shape)},
                      "environment": environment()})
    # after config.json: a run killed from here on is resumable from its initial state
    if point is None or point.from_seed:  # the initial weights: a trainable run and its frozen pair start from these
        run.save_checkpoint({"model": model.state_dict(), "config": config.to_dict()}, run.initial_checkpoint,
                            identity=identity)
    watch = DivergenceWatch(data.num_classes, config.lr, run.checkpoints)
    rows_before = backend.rows_evaluated()
    n = len(data.y_train)
    finished_epoch = start_epoch - 1
    steps_taken, budget_hit = 0, False
    try:
        for epoch in range(start_epoch, config.epochs + 1):
            began = time.perf_counter()
            order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
            batches = range(0, n, config.batch_size)
            first = start_batch if epoch == start_epoch else 0
            if epoch == start_epoch and partial is not None:
                norms, head_norm = partial["norms"].clone(), partial["head_norm"]
                run_loss, run_correct, seen = partial["run_loss"], partial["run_correct"], partial["seen"]
                began -= partial["seconds"]
            else:
                norms, head_norm = torch.zeros(config.layers, dtype=torch.float64), 0.0
                run_loss, run_correct, seen = 0.0, 0, 0
            bar = tqdm(batches[first:], desc=f"epoch {epoch}/{config.epochs}", disable=not progress, leave=False,
                       unit="batch", initial=first, total=len(batches))
            for start in bar:
                if config.max_steps is not None and steps_taken >= config.max_steps:
                    budget_hit = True
                    break
                idx = order[start:start + config.batch_size]
                optimizer.zero_grad()
                logits = model(data.x_train[idx])
                loss = torch.nn.functional.cross_entropy(logits, data.y_train[idx])
                watch.loss(loss, epoch, start // config.batch_size + 1)
                loss.backward()
                for k, layer in enumerate(model.layers):
                    if layer.weight.grad is not None:
                        norms[k] += float(layer.weight.grad.norm())
                head_norm += math.sqrt(sum(float(p.grad.norm()) ** 2 for p in model.head.parameters() if p.grad is not None))
                optimizer.step()
                watch.step(model, epoch, start // config.batch_size + 1)
                run_loss += loss.item() * len(idx)
                run_correct += int((logits.argmax(1) == data.y_train[idx]).sum())
                seen += len(idx)
                bar.set_postfix(loss=f"{run_loss / seen:.3f}", acc=f"{run_correct / seen:.3f}")
                steps_taken += 1
                if on_device:  # a dropped session loses at most the step in flight
                    done = start // config.batch_size + 1
                    run.save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                                         "batch": done, "elapsed": elapsed, "config": config.to_dict(),
                                         "partial": {"norms": norms.clone(), "head_norm": head_norm, "run_loss": run_loss,
                                                     "run_correct": run_correct, "seen": seen,
                                                     "seconds": time.perf_counter() - began}},
                                        run.step_checkpoint, identity=identity, history=metrics)
            if budget_hit:
                break
            train_loss, train_acc = loss_and_accuracy(model, data.x_train, data.y_train, eval_batch)
            test_loss, test_acc = loss_and_accuracy(model, data.x_test, data.y_test, eval_batch)
            watch.evaluation({"training-set loss": train_loss, "test-set loss": test_loss}, epoch)
            seconds = time.perf_counter() - began
            elapsed += seconds
            row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
                   "test_acc": test_acc, "seconds": seconds}
            row.update({f"grad_norm_layer{k + 1}": float(norms[k]) / len(batches) for k in range(config.layers)})
            row["grad_norm_head"] = head_norm / len(batches)
            metrics.append(row)
            # metrics first: a checkpoint always has its row, and a row without one is trained again on resume
            run.write_metrics(metrics, config.layers)
            run.save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                                 "elapsed": elapsed, "config": config.to_dict()},
                                run.epoch_checkpoint(epoch), identity=identity, history=metrics)
            best = max(metrics, key=lambda m: m["test_acc"])["epoch"]  # the first epoch reaching the best accuracy
            run.prune_checkpoints(config.keep_checkpoints, best)
            finished_epoch = epoch
            if progress:
                print(f"epoch {epoch}: train loss {train_loss:.4f} acc {train_acc:.3f} | test loss {test_loss:.4f} "
                      f"acc {test_acc:.3f} | grad norms " + " ".join(f"{row[f'grad_norm_layer{k + 1}']:.2e}"
                                                                    for k in range(config.layers)) + f" | {seconds:.1f} s")
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                break
    except KeyboardInterrupt:
        saved = ("no epoch finished yet" if not finished_epoch else "epoch 1 is saved" if finished_epoch == 1
                 else f"epochs 1-{finished_epoch} are saved")
        print(f"\ninterrupted during epoch {finished_epoch + 1}: {saved} in {out}; continue with "
              f"`qresnet train --resume {out}`", file=sys.stderr)
        raise
    except QresnetError:
        raise
    except Exception as exc:  # a dropped Runtime session, an expired token, a failed job
        if not on_device:
            raise
        raise TrainingError(f"the device run stopped ({type(exc).__name__}: {exc}); every finished step is saved in "
                            f"{run.checkpoints}: continue with `qresnet train --resume {out}`") from None
    if budget_hit and progress:
        print(f"max_steps={config.max_steps} reached: state saved in {run.step_checkpoint}; "
              f"continue with `qresnet train --resume {out}`")
    rows_after = backend.rows_evaluated()
    summary = {
        "run_dir": str(out),
        "epochs_completed": finished_epoch,
        "epochs": config.epochs,
        "final_test_acc": metrics[-1]["test_acc"] if metrics else None,
        "best_test_acc": max((m["test_acc"] for m in metrics), default=None),
        "final_train_loss": metrics[-1]["train_loss"] if metrics else None,
        "wall_time_s": elapsed,
        "parameter_sets_evaluated_this_session": None if rows_before is None else rows_after - rows_before,
        "backend": backend.name,
        "residual": config.residual.notation,
        "frozen": config.frozen,
        "seed": config.seed,
        "train_images": len(data.y_train),
        "test_images": len(data.y_test),
        "head": config.head,
        "head_notes": notes,
        "gradient": gradient,
        "steps_this_session": steps_taken,
        "stopped_at_max_steps": budget_hit,
    }
    if config.head == "quantum" and config.head_encoding_noise == "transpiled" and metrics:
        summary["head_encoding_noise"] = encoding_noise_check(model, backend, data, config.head_noise_samples, config.seed)
        atomic_write_json(run.head_noise_path, summary["head_encoding_noise"])
    run.write_summary(summary)
    if metrics:
        plot_curves(metrics, config.layers, run.curves_path)
    return summary
