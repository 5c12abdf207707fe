"""Can the Mini-SHRDLU agent learn a lesson's move at all? A supervised check.

The first two quick lessons (1 or 2 goals of 1 constraint, 3 blocks, the asked-for
goal one move away) have exactly one solving move per problem. This trains the
quick preset's agent (DNC or LSTM, same sizes) by cross-entropy on that move at
the query step, no reinforcement learning, and prints the accuracy per relation
every 100 iterations (with ``--lesson 2`` also by which goal was asked: shown
first or second). It separates "the network cannot learn the board lookup (or
the retrieval of a goal by its letter) fast enough" from "the policy gradient is
too weak".

    python benchmarks/shrdlu_lookup.py --lr 1e-3
    python benchmarks/shrdlu_lookup.py --lr 3e-3 [--model lstm] [--iterations 1500]
    python benchmarks/shrdlu_lookup.py --lr 3e-3 --lesson 2 [--model lstm]
    python benchmarks/shrdlu_lookup.py --lr 3e-3 --lesson 2 --set dnc.hidden_size=128
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
import torch.nn.functional as F

from torchdnc.envs import shrdlu
from torchdnc.tasks import shrdlu as task_module
from torchdnc.training.config import resolve_config
from torchdnc.training.runs import build_model


def solving_moves(problems: shrdlu.Problems) -> torch.Tensor:
    """The one move (0-5) that satisfies each problem's chosen goal."""
    constraints, valid = problems.chosen_goal()
    count = len(problems.boards)
    solves = torch.stack([
        shrdlu.satisfied(shrdlu.move(problems.boards, torch.full((count,), move))[0],
                         constraints, valid) == valid.sum(-1)
        for move in range(len(shrdlu.MOVES) - 1)], 1)
    if not bool((solves.sum(1) == 1).all()):
        raise RuntimeError("a problem without exactly one solving move (lessons 1-2 only)")
    return solves.float().argmax(1)


def satisfies_other_goal(problems: shrdlu.Problems, moves: torch.Tensor) -> torch.Tensor:
    """Whether ``moves`` also satisfy the goal not asked for (two-goal problems)."""
    rows = torch.arange(len(problems.boards))
    other = 1 - problems.chosen
    constraints, valid = problems.constraints[rows, other], problems.valid[rows, other]
    after = shrdlu.move(problems.boards, moves)[0]
    return shrdlu.satisfied(after, constraints, valid) == valid.sum(-1)


def letter_blind_accuracy(problems: shrdlu.Problems) -> float:
    """The expected accuracy of a policy that ignores the letter asked for: the move
    that satisfies both goals where there is one, else either goal's at random."""
    both = satisfies_other_goal(problems, solving_moves(problems)).float()
    return float((both + 0.5 * (1 - both)).mean())


def conflicting(problems: shrdlu.Problems, count: int) -> shrdlu.Problems:
    """The first ``count`` problems whose solving move does not satisfy the other goal."""
    keep = (~satisfies_other_goal(problems, solving_moves(problems))).nonzero().flatten()[:count]
    if len(keep) < count:
        raise RuntimeError(f"only {len(keep)} conflicting problems of {len(problems.boards)}")
    return shrdlu.Problems(*(getattr(problems, f.name)[keep]
                             for f in dataclasses.fields(problems)))


def observations(problems: shrdlu.Problems) -> torch.Tensor:
    """The goal steps and the query step of each episode, as the agent sees them."""
    count = len(problems.boards)
    shown = int(problems.valid.flatten(1).sum(1).max())
    if not bool((problems.valid.flatten(1).sum(1) == shown).all()):
        raise RuntimeError("episodes with different numbers of goal steps (lessons 1-2 only)")
    x = torch.zeros(count, shown + 1, task_module.OBSERVATION)
    task_module._goal_phase(x, problems)
    go = shrdlu.LETTERS + 2 * shrdlu.MAX_BLOCKS + len(shrdlu.RELATIONS)
    x[:, shown] = 0
    x[:, shown, go] = 1
    x[torch.arange(count), shown, problems.letters[torch.arange(count), problems.chosen]] = 1
    x[:, shown, -shrdlu.HEIGHT * shrdlu.COLUMNS * shrdlu.MAX_BLOCKS:] = \
        task_module._board_code(problems.boards)
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--model", default="dnc", choices=("dnc", "lstm"))
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a preset override, e.g. --set dnc.hidden_size=128 (repeatable)")
    parser.add_argument("--conflicting", action="store_true",
                        help="lesson 2: only problems where no move satisfies both goals, so "
                             "that the letter asked for decides the move")
    parser.add_argument("--lesson", type=int, default=1, choices=(1, 2),
                        help="quick lesson: 1 (one goal) or 2 (two goals, act on the asked one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set: expected NAME=VALUE, got {item!r}")
        overrides[name] = value
    config = resolve_config("shrdlu", "quick", {**overrides, "model": args.model, "seed": args.seed})
    task = config.make_task()
    torch.manual_seed(args.seed)
    model = build_model(config, task)
    optimizer = torch.optim.Adam(model.parameters(), args.lr)
    generator = torch.Generator().manual_seed(args.seed + 1)
    lesson = {k: v for k, v in task.levels()[args.lesson - 1].items() if k != "lesson"}
    names = [name.replace(" of", "") for name in shrdlu.RELATIONS]
    by_goal = " and by the goal asked (shown first, second)" if args.lesson == 2 else ""
    if args.conflicting and args.lesson != 2:
        parser.error("--conflicting: needs --lesson 2")
    if args.lesson == 2:
        sample = task.problems(4096, torch.Generator().manual_seed(12_345), **lesson)
        blind = 0.5 if args.conflicting else letter_blind_accuracy(sample)
        print(f"a policy blind to the letter asked for would be right on {blind:.3f} of the moves")
    print(f"{args.model}, Adam lr {args.lr}, lesson {args.lesson}, {overrides or 'quick preset'}: "
          f"iteration, loss, accuracy "
          f"over the last 100 batches (all, {', '.join(names)}){by_goal}")
    right = torch.zeros(4)
    seen = torch.zeros(4)
    right_goal = torch.zeros(2)
    seen_goal = torch.zeros(2)
    for step in range(1, args.iterations + 1):
        if args.conflicting:
            problems = conflicting(task.problems(4 * config.batch_size, generator, **lesson),
                                   config.batch_size)
        else:
            problems = task.problems(config.batch_size, generator, **lesson)
        target = solving_moves(problems)
        logits = model(observations(problems))[0][:, -1, : len(shrdlu.MOVES) - 1]
        loss = F.cross_entropy(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        relation = problems.chosen_goal()[0][:, 0, 1]
        hit = (logits.argmax(1) == target).float()
        right += torch.zeros(4).index_add_(0, relation, hit)
        seen += torch.bincount(relation, minlength=4).float()
        asked = problems.chosen.clamp(max=1)
        right_goal += torch.zeros(2).index_add_(0, asked, hit)
        seen_goal += torch.bincount(asked, minlength=2).float()
        if step % 100 == 0:
            per = (right / seen.clamp(min=1)).tolist()
            if args.lesson == 2:
                per += (right_goal / seen_goal.clamp(min=1)).tolist()
            print(f"{step:5d} {loss.item():.3f} {right.sum().item() / seen.sum().item():.2f} "
                  + " ".join(f"{p:.2f}" for p in per), flush=True)
            for counts in (right, seen, right_goal, seen_goal):
                counts.zero_()


if __name__ == "__main__":
    main()
