"""Training that survives hostile input: settings out of range, NaN, bad files,
killed saves, two processes on one run. Every user error is one line."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from test_train import TINY, tiny_config
from torchdnc.training import checkpoint
from torchdnc.cli import main
from torchdnc.training import RunError, RunLock, TrainingDiverged, read_metrics, train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY_ARGS = [f"--{k}={v}" for k, v in TINY.items()]


def one_line_error(capsys, args, expected_code=2) -> str:
    capsys.readouterr()  # what earlier calls wrote
    try:
        code = main(args)
    except SystemExit as exit:  # argparse's usage errors
        code = exit.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == expected_code and len(lines) == 1, (code, err)
    return lines[0]


@pytest.mark.parametrize("setting,message", [
    ("--grad_clip=-1", "grad_clip: expected a number >= 0"),
    ("--lr=inf", "lr: expected a number > 0, got inf"),
    ("--lr=nan", "lr: expected a number > 0, got nan"),
    ("--lr=0", "lr: expected a number > 0, got 0.0"),
    ("--rmsprop_alpha=2", "rmsprop_alpha: expected a number >= 0 and < 1, got 2.0"),
    ("--momentum=5", "momentum: expected a number >= 0 and < 1, got 5.0"),
    ("--optimizer_eps=-1e-8", "optimizer_eps: expected a number > 0"),
    ("--threads=-2", "threads: expected an integer >= 0"),
    ("--seed=-1", "seed: expected an integer in 0..9223372036854775807, got -1"),
    ("--solved_threshold=nan", "solved_threshold: expected a number >= 0"),
    ("--curriculum_threshold=-inf", "curriculum_threshold: expected a number >= 0"),
    ("--memory_size=0", "memory_size: expected an integer >= 1, got 0"),
    ("--clip=-3", "clip: expected a number >= 0"),
    ("--batch_size=0", "batch_size: expected an integer >= 1, got 0"),
])
def test_settings_out_of_range_are_refused_in_one_line(setting, message, capsys, tmp_path):
    line = one_line_error(capsys, ["train", "copy", *TINY_ARGS, setting, "--out", str(tmp_path / "r")])
    assert message in line
    assert not (tmp_path / "r").exists()


def test_a_run_whose_loss_turns_nan_stops_keeps_the_last_finite_checkpoint_and_fails(tmp_path, capsys):
    # Adam moves every weight by about lr: after step 1 they are ~1e30 (finite), and
    # the next step's gradients overflow to NaN.
    run = tmp_path / "run"
    line = one_line_error(capsys, ["train", "copy", *TINY_ARGS, "--lr=1e30", "--iterations=50",
                                   "--checkpoint_interval=1", "--out", str(run)])
    assert line.startswith("torchdnc train: error: training diverged at step 2: the gradient norm is "
                           f"nan; the last finite checkpoint (step 1) is kept in {run}")
    stored = checkpoint.load(run)
    assert stored["step"] == 1
    assert all(torch.isfinite(t).all() for t in stored["model"].values())
    end = [r for r in read_metrics(run) if r["kind"] == "end"][-1]
    assert end["diverged"].startswith("at step 2")


def test_a_nan_loss_stops_the_run(tmp_path, monkeypatch):
    import torchdnc.tasks.copy as copy_module

    calls = {"n": 0}
    real_loss = copy_module.CopyTask.loss

    def loss(self, outputs, batch):
        calls["n"] += 1
        value = real_loss(self, outputs, batch)
        return value * math.nan if calls["n"] == 4 else value

    monkeypatch.setattr(copy_module.CopyTask, "loss", loss)
    with pytest.raises(TrainingDiverged, match=r"training diverged at step 4: the loss is nan; the "
                                               r"last finite checkpoint \(step 3\) is kept"):
        train(tiny_config(iterations=10, checkpoint_interval=1), tmp_path)
    assert checkpoint.load(tmp_path)["step"] == 3


def test_weights_that_become_infinite_are_never_saved(tmp_path, monkeypatch):
    import torchdnc.training.loop as train_module

    real_step = torch.optim.Adam.step

    def poisoning_step(self, *args, **kwargs):  # a finite gradient, an update that overflows
        result = real_step(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(math.inf)
        return result

    monkeypatch.setattr(torch.optim.Adam, "step", poisoning_step)
    with pytest.raises(TrainingDiverged, match=r"at step 1: the weights became NaN or infinite; no "
                                               r"checkpoint was written"):
        train(tiny_config(iterations=5, checkpoint_interval=1), tmp_path)
    assert not (tmp_path / checkpoint.CHECKPOINT).exists()
    assert train_module  # the module under test


def test_resume_twice_at_once_is_refused(tmp_path):
    train(tiny_config(iterations=2), tmp_path)
    with RunLock(tmp_path):
        with pytest.raises(RunError, match=f"run directory {tmp_path} is in use by torchdnc process "
                                           f"{os.getpid()}"):
            train(tiny_config(iterations=4), tmp_path, resume=True)
        with pytest.raises(RunError, match="in use"):
            train(tiny_config(iterations=4), tmp_path, force=True)
    train(tiny_config(iterations=4), tmp_path, resume=True)  # free again
    assert checkpoint.load(tmp_path)["step"] == 4


def test_there_is_always_a_checkpoint_while_saving(tmp_path, monkeypatch):
    train(tiny_config(iterations=2), tmp_path)
    real_replace = os.replace

    def replace(source, target):
        assert (tmp_path / checkpoint.CHECKPOINT).exists(), f"no checkpoint before {source} -> {target}"
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    payload = checkpoint.load(tmp_path)
    payload.pop("format")
    checkpoint.save(tmp_path, {**payload, "step": 3})
    assert checkpoint.load(tmp_path)["step"] == 3
    assert checkpoint.load(tmp_path / checkpoint.PREVIOUS)["step"] == 2
    assert not list(tmp_path.glob(".*.tmp"))


def test_temporaries_of_killed_saves_are_removed_on_resume(tmp_path):
    train(tiny_config(iterations=2), tmp_path)
    stale = [tmp_path / f".{checkpoint.CHECKPOINT}.4242.tmp", tmp_path / f".{checkpoint.PREVIOUS}.4242.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    train(tiny_config(iterations=3), tmp_path, resume=True)
    assert not any(path.exists() for path in stale)


def test_extending_a_finished_run_equals_one_longer_run(tmp_path):
    # Every evaluation raises the curriculum level (threshold 1e9). The 10-step run
    # ends off the evaluation grid (4, 8, ...): its last evaluation must only report.
    options = dict(curriculum_threshold=1e9, max_length=6, curriculum_levels=4, eval_interval=4)
    short, long = tmp_path / "short", tmp_path / "long"
    train(tiny_config(iterations=10, **options), short)
    assert [r for r in read_metrics(short) if r["kind"] == "eval"][-1]["report_only"]
    train(tiny_config(iterations=20, **options), short, resume=True)
    train(tiny_config(iterations=20, **options), long)
    a, b = checkpoint.load(short), checkpoint.load(long)
    assert a["progress"]["level"] == b["progress"]["level"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_a_failed_start_leaves_no_run_directory_in_the_way(tmp_path, capsys):
    run = tmp_path / "run"
    line = one_line_error(capsys, ["train", "babi", *TINY_ARGS[:4], "--task.data_dir",
                                   str(tmp_path / "missing"), "--out", str(run)])
    assert f"bAbI data folder not found: {tmp_path / 'missing'}" in line
    assert not run.exists()


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    line = one_line_error(capsys, ["train", "copy", *TINY_ARGS, "--out", str(tmp_path / "file")])
    assert line.endswith(f"run directory {tmp_path / 'file'} is a file, not a directory")


def test_resume_onto_a_checkpoint_of_another_configuration(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    train(tiny_config(iterations=2), a)
    train(tiny_config(iterations=2, memory_size=7), b)
    shutil.copy(b / checkpoint.CHECKPOINT, a / checkpoint.CHECKPOINT)
    line = one_line_error(capsys, ["train", "--resume", str(a), "--iterations=4"])
    assert f"{checkpoint.CHECKPOINT} was written by another configuration than" in line
    assert "dnc.memory_size is 7 in the run, 6 requested" in line


@pytest.mark.parametrize("args,message", [
    (["--batches", "0"], "argument --batches: expected an integer >= 1, got 0"),
    (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got 0"),
    (["--device", "tpu"], "argument --device: expected cpu, cuda, cuda:N or auto, got 'tpu'"),
    (["--memory-size", "0"], "argument --memory-size: expected an integer >= 1, got 0"),
])
def test_eval_arguments_are_checked(tmp_path, capsys, args, message):
    train(tiny_config(iterations=2), tmp_path)
    assert message in one_line_error(capsys, ["eval", str(tmp_path), *args])


@pytest.mark.parametrize("name,text,message", [
    ("bad.yaml", "lr: [1\n", "not valid YAML (expected ',' or ']'"),
    ("bad.json", "{lr: 1}", "not valid JSON (Expecting property name enclosed in double quotes at "
                            "line 1, column 2)"),
    ("bad.yaml", b"\xff\xfe lr: 1", "not UTF-8 text"),
])
def test_malformed_config_files(tmp_path, capsys, name, text, message):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    line = one_line_error(capsys, ["train", "copy", "--config", str(path), "--out", str(tmp_path / "r")])
    assert f"config file {path}: {message}" in line


def _babi_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "babi"
    for split in ("en", "en-10k"):
        (folder / split).mkdir(parents=True)
        for source in (SHARED / "babi" / split).glob("qa2_*"):
            shutil.copy(source, folder / split / source.name)
    return folder


@pytest.mark.parametrize("file,content,message", [
    ("en-10k/qa2_two-supporting-facts_train.txt", b"\xff\xfe not text", "not UTF-8 text"),
    ("en-10k/qa2_two-supporting-facts_train.txt", b"", "no stories in this file"),
    ("en-10k/qa2_two-supporting-facts_test.txt", b"", "no stories in this file"),
])
def test_bad_babi_files_are_named(tmp_path, capsys, file, content, message):
    folder = _babi_copy(tmp_path)
    (folder / file).write_bytes(content)
    line = one_line_error(capsys, ["train", "babi", *TINY_ARGS[:4], "--task.tasks=2",
                                   "--task.data_dir", str(folder), "--out", str(tmp_path / "r")])
    assert f"{folder / file}: {message}" in line


def test_london_data_problems_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCHDNC_LONDON_DIR", str(tmp_path / "missing"))
    line = one_line_error(capsys, ["train", "traversal", "--out", str(tmp_path / "r")])
    assert f"London Underground data folder {tmp_path / 'missing'} ($TORCHDNC_LONDON_DIR) does " \
           "not exist" in line
    monkeypatch.delenv("TORCHDNC_LONDON_DIR")
    headers = tmp_path / "headers"
    headers.mkdir()
    for source in (SHARED / "london_underground").glob("*.csv"):
        (headers / source.name).write_text(source.read_text().splitlines()[0] + "\n")
    graph_args = [a for a in TINY_ARGS if not a.startswith(("--max_length", "--curriculum_"))]
    assert main(["train", "traversal", *graph_args, "--iterations=2", "--task.london_dir",
                 str(headers), "--out", str(tmp_path / "t")]) == 0
    capsys.readouterr()
    line = one_line_error(capsys, ["eval", str(tmp_path / "t"), "--batches", "1"])
    assert "london.stations.csv: no data rows after the header" in line


def test_ctrl_c_during_start_up_is_one_line(tmp_path, capsys, monkeypatch):
    import torchdnc.training.config as config_module

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(config_module.TrainConfig, "make_task", interrupted)
    line = one_line_error(capsys, ["train", "copy", *TINY_ARGS, "--out", str(tmp_path / "r")], 130)
    assert line == "torchdnc train: interrupted"
    assert not (tmp_path / "r").exists()
