"""Where a trained Mini-SHRDLU agent fails: success by which goal was asked for,
and how many failures carried out another goal instead.

    python benchmarks/shrdlu_failures.py runs/shrdlu-quick-0 --lesson 2 [--episodes 1024]

Greedy moves on fresh problems of one lesson of the run's curriculum.
"""

from __future__ import annotations

import argparse

import torch

from torchdnc.envs import shrdlu
from torchdnc.training.runs import load_trained


def final_boards(problems: shrdlu.Problems, actions: torch.Tensor) -> torch.Tensor:
    """The boards after replaying the episodes' moves (-1: no move at that step)."""
    boards = problems.boards.clone()
    for t in range(actions.shape[1]):
        moved, _ = shrdlu.move(boards, actions[:, t].clamp(min=0))
        boards = torch.where((actions[:, t] >= 0).view(-1, 1, 1), moved, boards)
    return boards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("--lesson", type=int, default=2)
    parser.add_argument("--episodes", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config, task, model, payload = load_trained(args.run, which="last")
    levels = task.levels()
    if not 1 <= args.lesson <= len(levels):
        raise SystemExit(f"--lesson: expected 1..{len(levels)}, got {args.lesson}")
    generator = torch.Generator().manual_seed(args.seed)
    lesson = {k: v for k, v in levels[args.lesson - 1].items() if k != "lesson"}
    problems = task.problems(args.episodes, generator, **lesson)
    batch = task.play(model, problems, generator, greedy=True)
    success = batch.info["final_fraction"] >= 1
    boards = final_boards(problems, batch.info["actions"])
    other_done = torch.zeros_like(success)
    for goal in range(problems.valid.shape[1]):
        constraints, valid = problems.constraints[:, goal], problems.valid[:, goal]
        done = (shrdlu.satisfied(boards, constraints, valid) == valid.sum(-1)) & valid.any(-1)
        other_done |= done & (problems.chosen != goal)
    print(f"{args.run} (step {payload['step']}), lesson {args.lesson}, {args.episodes} greedy "
          f"episodes: success {success.float().mean():.3f}")
    for goal in range(problems.valid.shape[1]):
        asked = problems.chosen == goal
        if asked.any():
            print(f"  goal shown {goal + 1}. asked for ({int(asked.sum())} episodes): "
                  f"success {success[asked].float().mean():.3f}")
    failed = ~success
    if failed.any():
        share = (failed & other_done).float().sum() / failed.float().sum()
        print(f"  failures that carried out another goal instead: {share:.1%} "
              f"of {int(failed.sum())}")


if __name__ == "__main__":
    main()
