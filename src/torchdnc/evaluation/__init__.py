"""Evaluation of trained runs: task metrics on fresh data at and beyond the
training difficulty (`report`), the bAbI per-task table (`babi`) and the graph
tasks' London Underground and family-tree tests (`graphs`).

    report = evaluate_run("runs/copy-quick")
    print(to_markdown(report))
"""

from torchdnc.evaluation.report import evaluate_run, to_markdown, write_report

__all__ = ["evaluate_run", "to_markdown", "write_report"]
