"""The one training loop, used by every task; DDP-ready through ``torchrun``.

    torchdnc train copy --preset quick            # one process
    torchrun --nproc_per_node=2 -m torchdnc train copy --preset quick

A run directory holds ``config.json``, ``checkpoint.safetensors`` (and the
previous one), ``metrics.jsonl``, TensorBoard events under ``tb/`` and, after
``torchdnc plot``, ``plots/``. Only rank 0 logs and saves. Every rank draws
the same global batch from the same generator and trains on its slice, so N
processes compute what one process computes on the whole batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from torchdnc.dnc import DNC
from torchdnc.kernels import fused
from torchdnc.tasks import Task, average_metrics, evaluate
from torchdnc.training import checkpoint
from torchdnc.training.config import TrainConfig, describe_difference
from torchdnc.training.distributed import (Distributed, rank_parameter_spread, setup_distributed,
                                           teardown_distributed)
from torchdnc.training.runs import (CONFIG_FILE, METRICS_FILE, RunError, RunLock, TrainingDiverged,
                                    build_model, build_optimizer, eval_generator, load_run_config,
                                    prepare_run_dir, read_metrics, resolve_device)

log = logging.getLogger(__name__)


class Logger:
    """JSONL, TensorBoard and a progress bar, on rank 0 only."""

    def __init__(self, run_dir: Path, config: TrainConfig, start: int, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        self.writer = None
        if not enabled:
            return
        self.file = open(run_dir / METRICS_FILE, "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=start)
        except Exception as error:  # optional at run time; a broken install is reported too
            log.warning("TensorBoard logging is off (%s: %s); metrics still go to %s",
                        type(error).__name__, error, METRICS_FILE)
            self.writer = None
        if config.progress:
            try:
                from tqdm import tqdm
            except ImportError:
                log.warning("no progress bar: tqdm is not installed (pip install 'torchdnc[train]')")
                return
            self.bar = tqdm(total=config.iterations, initial=start, dynamic_ncols=True,
                            desc=f"{config.task}/{config.model}", mininterval=1.0)

    def log(self, kind: str, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, **values}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)

    def progress(self, step: int, postfix: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.refresh()

    def message(self, text: str) -> None:
        if self.enabled:
            log.info(text)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        self.file.close()


@contextmanager
def stop_on_signals():
    """Turn SIGINT / SIGTERM into a flag the loop checks, so it can save first."""
    flag = {"signal": None}

    def handler(signum, frame):
        flag["signal"] = signal.Signals(signum).name

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass
class Progress:
    """Training progress that a checkpoint must carry for an exact resume."""

    step: int = 0
    level: int = 0
    solved: bool = False
    passes: int = 0  # evaluations in a row at or below solved_threshold at the last level
    best: float = math.inf  # best eval metric at the last level so far
    best_step: int = -1
    since_best: int = 0  # evaluations at the last level since the best one
    stopped_early: bool = False
    window: dict[str, float] = field(default_factory=dict)  # sums since the last log line
    last_eval: dict[str, float] = field(default_factory=dict)


def train(config: TrainConfig, run_dir: Path | str, *, resume: bool = False,
          force: bool = False) -> dict[str, Any]:
    """Train (or resume) a run; returns the last evaluation's metrics."""
    run_dir = Path(run_dir)
    ddp = setup_distributed(config.device)
    threads, kernel_threads = torch.get_num_threads(), fused._THREADS
    try:
        return _train(config, run_dir, resume, force, ddp)
    finally:
        torch.set_num_threads(threads)
        fused.set_threads(kernel_threads)
        teardown_distributed(ddp)


def _share_threads(model: nn.Module, device: torch.device) -> None:
    """A DNC that runs on the fused kernel gets every thread for the kernel, and
    torch's own ops around it (small beside the recurrence) stay on one thread.

    The kernel forks once per call and each thread takes its slice of the batch
    through the whole sequence; torch's intra-op parallelism would add a fork and
    a barrier to every small op of the step (and of the optimizer), and a busy
    neighbour on the cores (another training, a data loader) stalls a run at
    every one of them. Measured on config (a) beside a CPU-bound neighbour
    (README, "Speed"): 2.2x the idle step with torch's threads everywhere, 1.9x
    like this, at the same idle speed.
    """
    if device.type == "cpu" and isinstance(model, DNC) and model._kernel_applies() \
            and fused.available():
        fused.take_threads()


def _train(config: TrainConfig, run_dir: Path, resume: bool, force: bool,
           ddp: Distributed) -> dict[str, Any]:
    if config.batch_size % ddp.world_size:
        raise RunError(f"batch_size: {config.batch_size} is not divisible by the "
                       f"{ddp.world_size} processes")
    if config.threads:
        torch.set_num_threads(config.threads)
    elif ddp.enabled and not config.device.startswith("cuda"):
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ddp.world_size))
    device = resolve_device(config.device)
    if ddp.enabled and device.type == "cuda":
        device = torch.device("cuda", ddp.local_rank)

    stored = None
    if resume:
        stored_config = load_run_config(run_dir)
        differences = describe_difference(stored_config, config)
        if differences:
            raise RunError("cannot resume with a different model or task: " + "; ".join(differences))
    # Everything that can fail on bad input (data, sizes) happens before the run
    # directory is created, so that a failed start leaves nothing in the way.
    torch.manual_seed(config.seed)
    task = config.make_task()
    levels = task.levels()
    model = build_model(config, task).to(device)
    _share_threads(model, device)
    optimizer = build_optimizer(config, model)
    with contextlib.ExitStack() as resources:
        if resume:
            if ddp.main:
                resources.enter_context(RunLock(run_dir))
            stored = checkpoint.load(checkpoint.find(run_dir), map_location="cpu")
            _check_checkpoint_fits(stored, config, run_dir)
        elif ddp.main:
            prepare_run_dir(run_dir, force)
            resources.enter_context(RunLock(run_dir))
        if ddp.main:
            checkpoint.remove_stale_temporaries(run_dir)
        if ddp.enabled:
            dist.barrier()
        if ddp.main:
            (run_dir / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        return _loop(config, run_dir, ddp, device, task, levels, model, optimizer, stored)


def _check_checkpoint_fits(stored: dict[str, Any], config: TrainConfig, run_dir: Path) -> None:
    """A checkpoint copied from another run is refused by name, not by a torch error."""
    try:
        differences = describe_difference(TrainConfig.from_dict(stored["config"]), config)
    except (TypeError, ValueError) as error:
        raise RunError(f"{checkpoint.find(run_dir)} holds an unreadable config ({error})") from None
    if differences:
        raise RunError(f"{checkpoint.find(run_dir)} was written by another configuration "
                       f"than {run_dir / CONFIG_FILE}: " + "; ".join(differences))


def _loop(config: TrainConfig, run_dir: Path, ddp: Distributed, device: torch.device, task: Task,
          levels: list[dict[str, Any]], model: nn.Module, optimizer, stored) -> dict[str, Any]:
    data = torch.Generator().manual_seed(config.seed)
    progress = Progress(level=0 if config.curriculum else len(levels) - 1)
    if stored is not None:
        _truncate_metrics(run_dir, stored["step"], ddp)
        try:
            model.load_state_dict(stored["model"])
            # The optimizer's running statistics come from the checkpoint, its settings
            # (lr, momentum, ...) from this run's config: `--resume RUN --lr=1e-4` lowers lr.
            settings = [{k: v for k, v in group.items() if k != "params"}
                        for group in optimizer.param_groups]
            optimizer.load_state_dict(stored["optimizer"])
            for group, chosen in zip(optimizer.param_groups, settings):
                group.update(chosen)
        except (RuntimeError, ValueError, KeyError) as error:
            first = str(error).strip().splitlines()
            raise RunError(f"{checkpoint.find(run_dir)} does not fit this model "
                           f"({first[0] if first else type(error).__name__})") from None
        data.set_state(stored["data_rng"])
        torch.set_rng_state(stored["torch_rng"])
        progress = Progress(**stored["progress"])
    trained = nn.parallel.DistributedDataParallel(model) if ddp.enabled else model
    local = slice(ddp.rank * config.batch_size // ddp.world_size,
                  (ddp.rank + 1) * config.batch_size // ddp.world_size)

    saved_at = {"step": progress.step if stored is not None else -1}

    def payload() -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "step": progress.step, "config": config.to_dict(),
                "data_rng": data.get_state(), "torch_rng": torch.get_rng_state(),
                "progress": vars(progress).copy(), "task_levels": levels}

    def save(name: str = checkpoint.CHECKPOINT) -> None:
        if not ddp.main or (name == checkpoint.CHECKPOINT and saved_at["step"] == progress.step):
            return
        if not _finite(model):  # never a checkpoint with NaN / inf weights
            raise TrainingDiverged(f"at step {progress.step}: the weights became NaN or infinite")
        if name == checkpoint.CHECKPOINT:
            saved_at["step"] = progress.step
        checkpoint.save(run_dir, payload(), name=name)

    def save_best() -> None:
        if config.keep_best:
            save(checkpoint.BEST)

    logger = Logger(run_dir, config, progress.step, ddp.main)
    if stored is None:
        logger.log("start", 0, {"parameters": sum(p.numel() for p in model.parameters()),
                                "curriculum": task.describe_curriculum(),
                                "world_size": ddp.world_size})
    started, last_time, last_step = time.time(), time.time(), progress.step
    interrupted, diverged, end_info = None, None, {}
    try:
        with stop_on_signals() as stop:
            while progress.step < config.iterations and not (progress.solved or progress.stopped_early):
                batch = task.training_batch(model, config.batch_size, data, **levels[progress.level])
                batch = batch[local].to(device)
                outputs, _ = trained(batch.inputs, mask=batch.mask)
                loss = task.loss(outputs, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # The norm is taken (and finite-checked) even without clipping.
                grad_norm = nn.utils.clip_grad_norm_(model.parameters(),
                                                     config.grad_clip or math.inf)
                loss_value, norm_value = float(loss.detach()), float(grad_norm)
                # One collective per step: every rank stops at the same step, on a
                # signal to any of them or on a non-finite loss or gradient anywhere.
                signalled, nonfinite = ddp.any(
                    bool(stop["signal"]), not (math.isfinite(loss_value) and math.isfinite(norm_value)))
                if nonfinite:
                    what = (f"the loss is {loss_value}" if not math.isfinite(loss_value)
                            else f"the gradient norm is {norm_value}")
                    diverged = f"at step {progress.step + 1}: {what}" if ddp.world_size == 1 else \
                        f"at step {progress.step + 1}: the loss or the gradients on some rank"
                    break
                optimizer.step()
                progress.step += 1
                _accumulate(progress.window, {"loss": loss_value, "grad_norm": norm_value,
                                              **task.metrics(outputs.detach(), batch)})

                if progress.step % config.log_interval == 0:
                    window = _reduce_window(progress.window, ddp, task)
                    now = time.time()
                    rate = (progress.step - last_step) / max(now - last_time, 1e-9)
                    last_time, last_step = now, progress.step
                    logger.log("train", progress.step, {**window, "level": progress.level,
                                                        "it_per_s": rate})
                    logger.progress(progress.step, {
                        "loss": f"{window['loss']:.3f}",
                        task.primary_metric: f"{window[task.primary_metric]:.3g}",
                        "level": f"{progress.level + 1}/{len(levels)}"})
                    progress.window = {}

                if progress.step % config.eval_interval == 0:
                    _evaluate_and_advance(model, task, levels, config, progress, device, logger,
                                          save_best)
                elif progress.step == config.iterations:
                    # Off the evaluation grid, the last evaluation only reports: it moves
                    # no curriculum and stops nothing, so that extending the budget with
                    # --resume continues exactly as one longer run would.
                    _report_evaluation(model, task, levels, config, progress, device, logger)

                if progress.step % config.checkpoint_interval == 0:
                    save()
                if signalled:
                    interrupted = stop["signal"] or "a signal to another rank"
                    break
        if ddp.enabled:
            end_info["rank_parameter_spread"] = rank_parameter_spread(model, ddp)
    except KeyboardInterrupt:
        interrupted = "SIGINT"
    except TrainingDiverged as error:
        diverged = str(error)
    finally:  # a checkpoint on the way out, unless the weights went bad
        if diverged is None:
            try:
                save()
            except TrainingDiverged as error:
                diverged = str(error)
        elapsed = time.time() - started
        if progress.best_step >= 0:
            end_info.update(best=progress.best, best_step=progress.best_step,
                            stopped_early=progress.stopped_early)
        logger.log("end", progress.step, {"seconds": elapsed, "interrupted": interrupted,
                                          "solved": progress.solved, "level": progress.level,
                                          "diverged": diverged, **end_info})
        if diverged is None:
            logger.message(
                f"{'interrupted by ' + interrupted + ': ' if interrupted else ''}step {progress.step}, "
                f"level {progress.level + 1}/{len(levels)}, {elapsed:.0f} s; checkpoint in {run_dir}")
        logger.close()
    if diverged is not None:
        kept = saved_at["step"]
        where = (f"the last finite checkpoint (step {kept}) is kept in {run_dir}" if kept >= 0
                 else f"no checkpoint was written (the first was due at step "
                      f"{config.checkpoint_interval})")
        raise TrainingDiverged(f"training diverged {diverged}; {where}. Lower --lr, or check "
                               "--grad_clip and the optimizer settings")
    return {"step": progress.step, "level": progress.level, "solved": progress.solved,
            "interrupted": interrupted, **progress.last_eval}


def _finite(model: nn.Module) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


def _accumulate(window: dict[str, float], values: dict[str, float]) -> None:
    window["steps"] = window.get("steps", 0) + 1
    for key, value in values.items():
        window[key] = window.get(key, 0.0) + value


def _reduce_window(window: dict[str, float], ddp: Distributed, task: Task) -> dict[str, float]:
    """Means over the logging window (and over ranks): losses per step, metrics per sequence."""
    keys = sorted(window)
    totals = dict(zip(keys, ddp.all_reduce([window[k] for k in keys])))
    for key in ("steps", "loss", "grad_norm"):  # the same on every rank, or per rank: means
        totals[key] /= ddp.world_size
    steps = totals.pop("steps")
    result = {"loss": totals.pop("loss") / steps, "grad_norm": totals.pop("grad_norm") / steps}
    result.update(task.finalize_metrics(average_metrics(totals)))
    result.pop("sequences", None)
    return result


def _report_evaluation(model, task, levels, config, progress, device, logger) -> None:
    """Evaluate at the current level and log it, changing nothing else."""
    metrics = evaluate(model, task, levels[progress.level], config.eval_batches, config.batch_size,
                       eval_generator(config.seed, progress.step), device)
    metrics.pop("sequences", None)
    progress.last_eval = {**metrics, "level": progress.level}
    logger.log("eval", progress.step, {**metrics, "level": progress.level, "report_only": True})


def _evaluate_and_advance(model, task, levels, config, progress, device, logger,
                          save_best=lambda: None) -> None:
    """Evaluate at the current level; move up the curriculum or stop when solved.

    At the last level the best result is tracked: ``save_best`` runs when it
    improves (``keep_best``), and with ``early_stop_patience`` training stops
    after that many evaluations without improvement. Every rank computes the
    same evaluation (same weights, same data), so the decisions agree without
    communication.
    """
    params = levels[progress.level]
    metrics = evaluate(model, task, params, config.eval_batches, config.batch_size,
                       eval_generator(config.seed, progress.step), device)
    metrics.pop("sequences", None)
    metric = metrics[task.primary_metric]
    progress.last_eval = {**metrics, "level": progress.level}
    logger.log("eval", progress.step, {**metrics, "level": progress.level})
    last = progress.level == len(levels) - 1
    if last:
        if metric < progress.best:
            progress.best, progress.best_step, progress.since_best = metric, progress.step, 0
            save_best()
        else:
            progress.since_best += 1
            if 0 < config.early_stop_patience <= progress.since_best:
                progress.stopped_early = True
                logger.message(f"step {progress.step}: stopped early, no better {task.primary_metric} "
                               f"than {progress.best:.3g} (step {progress.best_step}) in "
                               f"{progress.since_best} evaluations")
    if config.curriculum and not last and metric <= config.curriculum_threshold:
        progress.level += 1
        logger.log("level", progress.step, {"level": progress.level, **levels[progress.level]})
        logger.message(f"step {progress.step}: {task.primary_metric} {metric:.3g} <= "
                       f"{config.curriculum_threshold} -> level {progress.level + 1}/{len(levels)} "
                       f"({', '.join(f'{k}={v}' for k, v in levels[progress.level].items())})")
    elif last and config.solved_threshold > 0:
        progress.passes = progress.passes + 1 if metric <= config.solved_threshold else 0
        if progress.passes >= config.solved_patience:
            progress.solved = True
            logger.message(f"step {progress.step}: solved ({task.primary_metric} {metric:.3g} <= "
                           f"{config.solved_threshold}, {progress.passes} evaluation(s) in a row)")


def _truncate_metrics(run_dir: Path, step: int, ddp: Distributed) -> None:
    """Drop log records written after the checkpoint a run resumes from."""
    if not ddp.main:
        return
    records = read_metrics(run_dir)
    kept = [r for r in records if r["step"] <= step]
    (run_dir / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in kept))
