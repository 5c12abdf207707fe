"""benchmarks/experiments.py: every experiment is a valid training command, and
its tables read the runs back (the README's tables come from it)."""

from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path

import pytest

from torchdnc.training.config import resolve_config

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "experiments.py"


@pytest.fixture(scope="module")
def experiments():
    spec = importlib.util.spec_from_file_location("experiments", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def overrides(arguments: list[str]) -> tuple[str, dict[str, str]]:
    """(preset, {name: value}) of `torchdnc train TASK ...` arguments."""
    preset, values, rest = None, {}, iter(arguments)
    for item in rest:
        name, _, value = item.lstrip("-").partition("=")
        value = value or next(rest)
        if name == "preset":
            preset = value
        else:
            values[name] = value
    return preset, values


def test_every_experiment_resolves_to_a_config(experiments):
    for name, text in experiments.EXPERIMENTS.items():
        task, *arguments = shlex.split(text)
        preset, values = overrides(arguments)
        config = resolve_config(task, preset=preset, overrides=values)
        assert config.seed == int(values.get("seed", 0)), name


def test_babi_table_groups_runs_into_mean_and_spread(experiments, tmp_path, monkeypatch):
    def report(errors):
        rows = [{"task": t, "name": f"task{t}", "error_percent": e, "paper_dnc1_mean": 10.0 * t,
                 "paper_dnc1_sd": 1.0, "paper_lstm_mean": 20.0, "paper_lstm_sd": 1.0}
                for t, e in zip((1, 2), errors)]
        rows.append({**rows[0], "task": 3, "name": "task3", "error_percent": None})  # not trained
        return {"per_task": {"rows": rows, "mean_error_percent": sum(errors) / 2,
                             "failed": sum(e > 5 for e in errors)}}

    for run, errors in {"a": (10.0, 2.0), "b": (20.0, 4.0)}.items():
        (tmp_path / run).mkdir()
        (tmp_path / run / "eval.json").write_text(json.dumps(report(errors)))
    monkeypatch.setattr(experiments, "RUNS", tmp_path)
    lines = experiments.babi_table(["a", "both=a,b"]).splitlines()
    assert lines[0].startswith("| task | a (%) | both (%) |")
    assert lines[2] == "| 1: task1 | 10.0 | 15.0 ± 7.1 | 10.0 ± 1.0 | 20.0 ± 1.0 |"
    assert lines[3] == "| 2: task2 | 2.0 | 3.0 ± 1.4 | 20.0 ± 1.0 | 20.0 ± 1.0 |"
    # Two tasks, not twenty: the paper's columns are the mean of these rows' means.
    assert lines[4] == "| mean error | 6.0 | 9.0 ± 4.2 | 15.0 | 20.0 |"
    assert lines[5] == "| failed tasks (error > 5%) | 1 | 1.0 ± 0.0 | n/a | n/a |"


def test_curves_draw_every_run_of_every_group(experiments, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    for run, errors in {"a": (0.3, 0.1), "b": (0.3, 0.2), "c": (0.3, 0.0)}.items():
        (tmp_path / run).mkdir()
        records = [{"kind": "eval", "step": 100 * (i + 1), "bit_error": e} for i, e in enumerate(errors)]
        (tmp_path / run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    monkeypatch.setattr(experiments, "RUNS", tmp_path)
    from torchdnc.viz import comparison_figure

    figure = comparison_figure({"dnc": [experiments._records(tmp_path / n) for n in "ab"],
                                "md": [experiments._records(tmp_path / "c")]}, "bit_error")
    lines = figure.axes[0].get_lines()
    assert [list(line.get_ydata()) for line in lines] == [[0.3, 0.1], [0.3, 0.2], [0.3, 0.0]]
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["dnc", "md"]
    path = experiments.curves({"dnc": ["a", "b"], "md": ["c"]}, "bit_error", tmp_path / "c.png")
    assert path.stat().st_size > 0


def test_group_arguments_are_parsed_or_refused_by_name(experiments):
    assert experiments._groups(["dnc=a,b", "md=c"]) == {"dnc": ["a", "b"], "md": ["c"]}
    with pytest.raises(SystemExit, match="expected GROUP=RUN,RUN,... .* got 'a'"):
        experiments._groups(["a"])
