"""The study (docs/scaling.md) runs end to end: every part with --quick."""

from __future__ import annotations

import json

from torchdnc.cli import main


def test_every_part_runs_quick_and_writes_numbers_and_figures(tmp_path):
    assert main(["study", "all", "--quick", "--seeds", "1", "--jobs", "1",
                 "--out", str(tmp_path)]) == 0
    for part, files in {"load": ["load.csv", "hidden.json", "memory_size.csv", "load-copy.png",
                                 "memory_size-copy.png", "hidden-copy.png"],
                        "retention": ["retention.csv", "retention.png"],
                        "overflow": ["overflow.json", "overload.csv", "overflow_blocks.csv", "overflow-lstm.png",
                                     "overflow-ablations.png"],
                        "cost": ["cost.csv", "cost.png"]}.items():
        for name in files:
            assert (tmp_path / part / name).is_file(), (part, name)
        assert json.loads((tmp_path / part / "timing.json").read_text())["quick"]
        if part != "cost":  # the learned parts summarise their seeds
            summary = (tmp_path / part / "summary.md").read_text()
            assert summary.startswith(f"Made by `torchdnc study {part}`") and " ± " in summary
    rows = json.loads((tmp_path / "load" / "load.json").read_text())["rows"]
    assert {r["model"] for r in rows} == {"dnc", "lstm", "superlstm"}
    assert {r["memory_multiple"] for r in rows if r["model"] == "dnc"} == {0.25, 0.5, 1, 2, 4}
    cost = json.loads((tmp_path / "cost" / "cost.json").read_text())
    assert {r["model"] for r in cost["rows"]} == {"dense", "lstm"}
    # a part run again reuses its trained runs and only evaluates; a run that was
    # interrupted (no end record) goes on from its checkpoint
    interrupted = tmp_path / "retention" / "runs" / "retention-dnc-s0"
    metrics = interrupted / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    kept = [line for line in lines if '"kind": "end"' not in line]
    kept.append('{"kind": "end", "step": 20, "interrupted": "SIGTERM"}')  # as a signal leaves it
    metrics.write_text("\n".join([kept[0], '{"kind": "marker", "step": 0}', *kept[1:]]) + "\n")
    assert main(["study", "retention", "--quick", "--seeds", "1", "--jobs", "1",
                 "--out", str(tmp_path)]) == 0
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r.get("interrupted") for r in records if r["kind"] == "end"] == ["SIGTERM", None]
    assert {"kind": "marker", "step": 0} in records  # resumed, not started again
    assert [r["step"] for r in records if r["kind"] == "train"] == [10, 20]
