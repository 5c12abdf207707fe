"""Specification of the training loop: configs, checkpoints, resume, eval, plots, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from torchdnc.training import checkpoint
from torchdnc.training.checkpoint import CheckpointError
from torchdnc.cli import main
from torchdnc.training.config import TrainConfig, resolve_config
from torchdnc.training import RunError, read_metrics, train

TINY = {"hidden_size": "16", "memory_size": "6", "word_size": "4", "num_reads": "1",
        "batch_size": "4", "max_length": "3", "curriculum_start": "2", "curriculum_levels": "2",
        "eval_interval": "4", "eval_batches": "1", "log_interval": "1", "progress": "false",
        "optimizer": "adam", "lr": "1e-3"}


def tiny_config(**overrides) -> TrainConfig:
    return resolve_config("copy", "default", {**TINY, **{k: str(v) for k, v in overrides.items()}})


def train_losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir) if r["kind"] == "train"]


def test_resume_equals_uninterrupted_run_bit_for_bit(tmp_path):
    whole = tmp_path / "whole"
    train(tiny_config(iterations=12, checkpoint_interval=6), whole)
    part = tmp_path / "part"
    train(tiny_config(iterations=7, checkpoint_interval=100), part)  # stops off the checkpoint grid
    train(tiny_config(iterations=12, checkpoint_interval=100), part, resume=True)
    assert train_losses(part) == train_losses(whole)
    assert len(train_losses(whole)) == 12
    a = checkpoint.load(whole / checkpoint.CHECKPOINT)["model"]
    b = checkpoint.load(part / checkpoint.CHECKPOINT)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_a_lower_learning_rate_uses_it(tmp_path):
    # The optimizer's statistics come back from the checkpoint, its settings from the
    # new config: a fine-tune at a tiny lr barely moves the weights (at 1e-3 they move).
    train(tiny_config(iterations=4), tmp_path)
    before = checkpoint.load(tmp_path)["model"]
    train(tiny_config(iterations=8, lr=1e-12), tmp_path, resume=True)
    after = checkpoint.load(tmp_path)
    assert after["step"] == 8
    assert max(float((after["model"][k] - before[k]).abs().max()) for k in before) < 1e-9
    assert after["optimizer"]["param_groups"][0]["lr"] == 1e-12


def test_checkpoint_holds_everything_and_loads_weights_only(tmp_path):
    train(tiny_config(iterations=4, checkpoint_interval=2), tmp_path)
    payload = checkpoint.load(tmp_path)
    assert payload["step"] == 4
    assert {"model", "optimizer", "data_rng", "torch_rng", "progress", "config"} <= set(payload)
    assert TrainConfig.from_dict(payload["config"]) == tiny_config(iterations=4, checkpoint_interval=2)
    assert (tmp_path / checkpoint.PREVIOUS).exists()  # the previous one is kept
    assert not list(tmp_path.glob("*.tmp"))
    assert (tmp_path / checkpoint.CHECKPOINT).read_bytes()[8:9] == b"{"  # safetensors, no pickle


class Arbitrary:
    pass


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": 1, "model": Arbitrary(), "optimizer": {}, "step": 0, "config": {}}, path)
    with pytest.raises(CheckpointError, match=f"checkpoint {path} refused: it holds Python objects "
                                              "that would run code when loaded .it names test_train.Arbitrary"):
        checkpoint.load(path)


def test_truncated_checkpoint_names_the_file_and_keeps_the_last_good(tmp_path):
    train(tiny_config(iterations=4, checkpoint_interval=2), tmp_path)
    path = tmp_path / checkpoint.CHECKPOINT
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"checkpoint {path} is truncated or corrupted.*"
                                              "previous checkpoint .*checkpoint.prev.safetensors is kept"):
        train(tiny_config(iterations=8), tmp_path, resume=True)
    assert checkpoint.load(tmp_path / checkpoint.PREVIOUS)["step"] == 2


def test_resume_with_a_different_model_is_refused(tmp_path):
    train(tiny_config(iterations=2), tmp_path)
    with pytest.raises(RunError, match=r"dnc.memory_size is 6 in the run, 7 requested"):
        train(tiny_config(iterations=4, memory_size=7), tmp_path, resume=True)
    with pytest.raises(RunError, match=r"task.max_length is 3 in the run, 4 requested"):
        train(tiny_config(iterations=4, max_length=4), tmp_path, resume=True)


def test_existing_run_directory_needs_force(tmp_path):
    train(tiny_config(iterations=2), tmp_path)
    with pytest.raises(RunError, match="already exists; pass --force"):
        train(tiny_config(iterations=2), tmp_path)
    train(tiny_config(iterations=3), tmp_path, force=True)
    assert checkpoint.load(tmp_path)["step"] == 3
    other = tmp_path / "notarun"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(RunError, match="refusing to delete it even with --force"):
        train(tiny_config(iterations=2), other, force=True)
    assert (other / "precious.txt").exists()


def test_curriculum_rises_and_is_logged(tmp_path):
    config = tiny_config(iterations=8, curriculum_threshold=1e9)  # every evaluation passes
    train(config, tmp_path)
    records = read_metrics(tmp_path)
    levels = [r for r in records if r["kind"] == "level"]
    assert levels and levels[0]["step"] == 4 and levels[0]["level"] == 1
    assert levels[0]["max_length"] == 3
    assert {r["level"] for r in records if r["kind"] == "train"} == {0, 1}
    assert list((tmp_path / "tb").iterdir()), "TensorBoard events are written"


def test_solved_threshold_stops_early(tmp_path):
    result = train(tiny_config(iterations=100, curriculum_threshold=1e9, solved_threshold=1e9),
                   tmp_path)
    assert result["solved"] and result["step"] == 8


def test_solved_needs_patience_evaluations_in_a_row(tmp_path):
    result = train(tiny_config(iterations=100, curriculum_threshold=1e9, solved_threshold=1e9,
                               solved_patience=2), tmp_path)
    assert result["solved"] and result["step"] == 12  # level up at 4, passes at 8 and 12


def scripted_evaluations(monkeypatch, values):
    """Make the loop's evaluations return ``values`` (bits per sequence) in turn."""
    import torchdnc.training.loop as train_module

    results = iter(values)
    monkeypatch.setattr(train_module, "evaluate",
                        lambda *args, **kwargs: {"bits_per_sequence": next(results), "loss": 1.0})


def test_keep_best_saves_the_best_validation_weights_and_eval_uses_them(tmp_path, monkeypatch,
                                                                        capsys):
    # curriculum_threshold 1e9: level 2 (the last) from step 4; evals at 4, 8, ..., 20
    scripted_evaluations(monkeypatch, [5.0, 3.0, 1.0, 2.0, 4.0])
    train(tiny_config(iterations=20, curriculum_threshold=1e9, keep_best=True), tmp_path)
    best = checkpoint.load(tmp_path / checkpoint.BEST)
    assert best["step"] == 12 and best["progress"]["best"] == 1.0
    assert checkpoint.load(tmp_path / checkpoint.CHECKPOINT)["step"] == 20
    end = [r for r in read_metrics(tmp_path) if r["kind"] == "end"][-1]
    assert (end["best"], end["best_step"], end["stopped_early"]) == (1.0, 12, False)
    monkeypatch.undo()
    assert main(["eval", str(tmp_path), "--batches", "1", "--batch-size", "4"]) == 0
    assert "step 12, the best validation result" in capsys.readouterr().out
    assert main(["eval", str(tmp_path), "--batches", "1", "--batch-size", "4", "--last"]) == 0
    out = capsys.readouterr().out
    assert "step 20," in out and "best validation" not in out


def test_early_stop_after_patience_evaluations_without_improvement(tmp_path, monkeypatch):
    # Level 1 is not counted (its evaluations are on easier data): the 9.0 at step 4
    # raises the level; at the last level 2.0 (step 8) is best, 3.0 and 2.0 do not beat it.
    scripted_evaluations(monkeypatch, [9.0, 2.0, 3.0, 2.0, 0.5])
    result = train(tiny_config(iterations=100, curriculum_threshold=1e9, early_stop_patience=2),
                   tmp_path)
    assert result["step"] == 16
    assert not (tmp_path / checkpoint.BEST).exists()  # keep_best is off
    end = [r for r in read_metrics(tmp_path) if r["kind"] == "end"][-1]
    assert end["stopped_early"] and end["best_step"] == 8
    with pytest.raises(ValueError, match="early_stop_patience: expected an integer >= 0, got -1"):
        tiny_config(early_stop_patience=-1)


def test_sigterm_saves_a_checkpoint_then_resume(tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "torchdnc", "train", "copy", "--out", str(run),
            *[f"--{k}={v}" for k, v in TINY.items()], "--iterations=100000"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline and not any(r["kind"] == "train" for r in read_metrics(run)):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output.decode()
    stopped = checkpoint.load(run)["step"]
    assert stopped >= 1
    end = [r for r in read_metrics(run) if r["kind"] == "end"][-1]
    assert end["interrupted"] == "SIGTERM" and end["step"] == stopped
    assert main(["train", "--resume", str(run), f"--iterations={stopped + 2}"]) == 0
    assert checkpoint.load(run)["step"] == stopped + 2


def test_eval_reports_generalisation_and_larger_memory(tmp_path, capsys):
    train(tiny_config(iterations=2), tmp_path)
    assert main(["eval", str(tmp_path), "--batches", "1", "--batch-size", "2"]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    settings = {(r["setting"].split(" (")[0], r["memory_size"]) for r in report["rows"]}
    assert settings == {("training", 6), ("training", 24), ("length 6", 6), ("length 6", 24),
                        ("length 12", 6), ("length 12", 24)}
    assert "| setting | N | bits_per_sequence | bit_error | loss |" in capsys.readouterr().out
    assert (tmp_path / "eval.md").exists()


def test_plot_writes_pngs(tmp_path):
    train(tiny_config(iterations=4), tmp_path)
    assert main(["plot", str(tmp_path)]) == 0
    for name in ("training.png", "memory.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"


def test_lstm_baseline_matches_parameter_count_and_trains(tmp_path):
    config = tiny_config(iterations=3, model="lstm")
    train(config, tmp_path)
    from torchdnc.training import load_trained

    _, task, model, _ = load_trained(tmp_path)
    dnc_params = sum(p.numel() for p in
                     __import__("torchdnc").DNC(config.dnc_config(task)).parameters())
    lstm_params = sum(p.numel() for p in model.parameters())
    assert abs(lstm_params - dnc_params) / dnc_params < 0.1


def test_config_file_and_override_precedence(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("lr: 0.01\ndnc:\n  memory_size: 9\ntask_options:\n  max_length: 4\n")
    config = resolve_config("copy", "quick", {"lr": "0.02"}, path)
    assert config.lr == 0.02 and config.dnc["memory_size"] == 9
    assert config.task_options["max_length"] == 4
    assert config.dnc["num_reads"] == 1  # from the preset


@pytest.mark.parametrize("args,message", [
    (["train", "kopy"], "unknown task .kopy.; valid tasks: associative_recall, babi, copy"),
    (["train", "copy", "--preset", "fast"], "unknown preset 'fast' for task 'copy'; valid presets:"),
    (["train", "copy", "--lr=fast"], "option lr: expected a number, got 'fast'"),
    (["train", "copy", "--memory_size=1.5"], "option memory_size: expected an integer, got '1.5'"),
    (["train", "copy", "--hiden_size=3"], "unknown option 'hiden_size'; valid options: .*hidden_size"),
    (["train", "copy", "--input_size=3"], "follow from the task"),
    (["train", "--resume", "/nonexistent/run"], "run directory /nonexistent/run does not exist"),
    (["eval", "/nonexistent/run"], "run directory /nonexistent/run does not exist"),
    (["train", "copy", "--progress=maybe"], "option progress: expected true or false, got 'maybe'"),
])
def test_bad_command_lines_get_clear_errors(args, message, capsys):
    assert main(args) == 2
    import re

    assert re.search(message, capsys.readouterr().err)


def test_train_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for option in ("--lr=", "--batch_size=", "--memory_size=", "--num_writes=", "--resume", "--force"):
        assert option in out


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_ddp_two_processes_match_one_process(tmp_path):
    overrides = [f"--{k}={v}" for k, v in TINY.items()] + ["--iterations=6", "--eval_interval=3"]
    single, double = tmp_path / "single", tmp_path / "ddp"
    assert main(["train", "copy", "--out", str(single), *overrides]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "torchdnc", "train", "copy", "--out", str(double), *overrides],
        capture_output=True, text=True, env=env, timeout=300)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    end = [r for r in read_metrics(double) if r["kind"] == "end"][-1]
    assert end["rank_parameter_spread"] == 0.0  # ranks hold identical parameters
    a = checkpoint.load(single)["model"]
    b = checkpoint.load(double)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    losses = [loss for _, loss in train_losses(single)]
    assert [loss for _, loss in train_losses(double)] == pytest.approx(losses, rel=1e-5)


def _worker_pids(parent: int) -> dict[int, int]:
    """{rank: pid} of the torchrun workers under ``parent``."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != parent:
                continue
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        for entry in environ:
            if entry.startswith(b"RANK="):
                found[int(entry[5:])] = int(stat.parent.name)
    return found


@pytest.mark.parametrize("rank", [1, 0])
def test_ddp_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path, rank):
    run = tmp_path / "ddp"
    overrides = [f"--{k}={v}" for k, v in TINY.items()] + ["--iterations=1000000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "torchdnc", "train", "copy", "--out", str(run), *overrides],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len([r for r in read_metrics(run) if r["kind"] == "train"]) < 3:
            time.sleep(0.2)
        workers = _worker_pids(launcher.pid)
        assert sorted(workers) == [0, 1], workers
        os.kill(workers[rank], signal.SIGTERM)  # one rank only
        output, _ = launcher.communicate(timeout=120)  # a hang here fails the test
    finally:
        if launcher.poll() is None:
            launcher.kill()
    end = [r for r in read_metrics(run) if r["kind"] == "end"][-1]
    # rank_parameter_spread is a collective after the loop: both ranks left it together.
    assert end["rank_parameter_spread"] == 0.0, output.decode()[-2000:]
    assert end["interrupted"] == ("SIGTERM" if rank == 0 else "a signal to another rank")
    assert checkpoint.load(run)["step"] == end["step"] >= 3
    assert not list(run.glob(".*.tmp"))


def test_collectives_use_the_process_group_device(monkeypatch):
    """What a NCCL run does: every tensor in a collective is on the group's device."""
    import torch.distributed as dist

    import torchdnc.training.loop as train_module

    seen = []

    class Stop(Exception):
        pass

    def all_reduce(tensor, op=None):
        seen.append(tensor.device)
        raise Stop

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    ddp = train_module.Distributed(rank=0, world_size=2, device=torch.device("meta"))
    model = torch.nn.Linear(2, 2)
    calls = [lambda: train_module._reduce_window({"steps": 1.0, "loss": 1.0, "grad_norm": 1.0},
                                                 ddp, tiny_config().make_task()),
             lambda: ddp.any(True, False),
             lambda: train_module.rank_parameter_spread(model, ddp)]
    for call in calls:
        with pytest.raises(Stop):
            call()
    assert seen == [torch.device("meta")] * 3


def test_babi_trains_evaluates_per_task_and_plots_a_story(tmp_path, capsys):
    from torchdnc.data.babi import resolve_data_dir

    try:
        resolve_data_dir(None)
    except FileNotFoundError as missing:
        pytest.skip(f"bAbI data not found: {missing}")
    args = ["train", "babi", "--out", str(tmp_path), "--tasks=1", "--hidden_size=8",
            "--memory_size=4", "--word_size=4", "--num_reads=1", "--batch_size=4",
            "--iterations=2", "--eval_interval=2", "--eval_batches=1", "--progress=false"]
    assert main(args) == 0
    assert main(["eval", str(tmp_path), "--batch-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "| 1 " in out or "1: " in out
    assert (tmp_path / "eval.csv").read_text().count("\n") >= 2
    assert main(["plot", str(tmp_path)]) == 0
    assert (tmp_path / "plots" / "story.png").exists()


def test_traversal_trains_evaluates_per_query_length_and_plots(tmp_path, capsys):
    from torchdnc.tasks.graphs import london_available

    args = ["train", "traversal", "--out", str(tmp_path), "--lessons=1", "--hidden_size=8",
            "--memory_size=4", "--word_size=4", "--num_reads=1", "--batch_size=2",
            "--iterations=2", "--eval_interval=2", "--eval_batches=1", "--progress=false"]
    assert main(args) == 0
    assert main(["eval", str(tmp_path), "--batches", "1", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "| setting | N | sequence_error | triple_error | digit_error | loss |" in out
    if london_available():  # tested on the paper-sized map and on the whole network
        assert "| query length | right | total | accuracy |" in out
        assert "traversal test on zone-1 interchange map: 40 stations" in out
        assert "traversal test on full network: 302 stations" in out
    assert main(["plot", str(tmp_path)]) == 0
    assert (tmp_path / "plots" / "memory.png").exists()
    if london_available():
        assert (tmp_path / "plots" / "underground.png").exists()


def test_sparse_model_trains_through_the_same_loop(tmp_path):
    config = tiny_config(iterations=3, model="sparse")
    config = TrainConfig.from_dict({**config.to_dict(), "sparse": {"sparse_reads": 2,
                                                                   "link_entries": 3}})
    train(config, tmp_path)
    from torchdnc.sparse import SparseDNC
    from torchdnc.training import load_trained

    _, _, model, payload = load_trained(tmp_path)
    assert isinstance(model, SparseDNC) and payload["step"] == 3
    assert model.config.link_entries == 3
    with pytest.raises(ValueError, match=r"sparse: unknown field\(s\) \['reads'\]"):
        TrainConfig.from_dict({**config.to_dict(), "sparse": {"reads": 2}})


def test_a_broken_tensorboard_is_reported_not_swallowed(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with caplog.at_level("WARNING", logger="torchdnc"):
        train(tiny_config(iterations=2), tmp_path)
    assert any("TensorBoard logging is off (ModuleNotFoundError" in r.getMessage()
               for r in caplog.records)
    assert read_metrics(tmp_path)  # metrics.jsonl still written


def test_training_messages_go_through_logging(tmp_path, caplog):
    with caplog.at_level("INFO", logger="torchdnc"):
        train(tiny_config(iterations=4, curriculum_threshold=1e9), tmp_path)
    assert any(r.name == "torchdnc.training.loop" and "-> level 2/2" in r.getMessage() for r in caplog.records)
