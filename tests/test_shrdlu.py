"""Mini-SHRDLU (docs/shrdlu.md): the board's rules, constraints on hand-worked
boards, rewards, determinism, batch against single, and the RL task."""

from __future__ import annotations

import pytest
import torch

from torchdnc import DNC
from torchdnc.envs import shrdlu
from torchdnc.tasks import average_metrics
from torchdnc.tasks.shrdlu import ACTIONS, OBSERVATION, ShrdluTask, _returns_and_advantages


def board(*columns) -> torch.Tensor:
    """A board from its columns, each listed bottom to top."""
    grid = torch.zeros(1, shrdlu.HEIGHT, shrdlu.COLUMNS, dtype=torch.long)
    for c, blocks in enumerate(columns):
        for r, block in enumerate(blocks):
            grid[0, r, c] = block
    return grid


def action(source, target) -> int:
    return shrdlu.MOVES.index((source, target))


def test_legal_moves_take_the_top_block_and_illegal_ones_change_nothing():
    start = board([1, 2], [3], [])
    after, invalid = shrdlu.move(start, torch.tensor([action(0, 2)]))
    assert torch.equal(after, board([1], [3], [2])) and not invalid.item()
    after, invalid = shrdlu.move(start, torch.tensor([action(2, 0)]))  # from an empty column
    assert torch.equal(after, start) and invalid.item()
    full = board([1, 2, 4], [3], [])
    after, invalid = shrdlu.move(full, torch.tensor([action(1, 0)]))  # onto a full column
    assert torch.equal(after, full) and invalid.item()
    after, invalid = shrdlu.move(start, torch.tensor([shrdlu.PASS]))
    assert torch.equal(after, start) and not invalid.item()
    assert shrdlu.legal(after).item() and not shrdlu.legal(board([0, 2], [], [])).item()


def test_constraints_on_the_papers_goal_T_board():
    """Fig. 4b, goal T = 6b2 4l1 5b4 6r3 2b1 5l2: columns [3,5,4] | [6,2,1] | empty."""
    paper = board([3, 5, 4], [6, 2, 1], [])
    T = torch.tensor([[[6, 1, 2], [4, 2, 1], [5, 1, 4], [6, 3, 3], [2, 1, 1], [5, 2, 2]]])
    valid = torch.ones(1, 6, dtype=torch.bool)
    assert shrdlu.satisfied(paper, T, valid).item() == 6
    # Adjacency is strict: 3 is below 4 but not directly, 3 is left of 6 (same row).
    table = shrdlu.facts(paper)[0]
    assert not table[3, 1, 4] and table[3, 2, 6] and table[6, 3, 3] and table[1, 0, 2]
    moved = board([3, 5], [6, 2, 1], [4])
    assert shrdlu.satisfied(moved, T, valid).item() == 4  # 5b4 and 4l1 no longer hold


def test_reward_is_the_satisfied_share_and_success_is_scored():
    task = ShrdluTask(curriculum="quick")
    problems = shrdlu.Problems(
        boards=board([1], [2], [3]), constraints=torch.tensor([[[[1, 1, 2]]]]),
        valid=torch.ones(1, 1, 1, dtype=torch.bool), letters=torch.tensor([[4]]),
        chosen=torch.tensor([0]), least_moves=torch.tensor([1]), blocks=torch.tensor([3]))

    class Mover(torch.nn.Module):  # always moves column 1 onto column 0 (2 onto 1: "1 below 2")
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, state=None, mask=None):
            logits = torch.full((x.shape[0], 1, ACTIONS + 1), -20.0)
            logits[..., action(1, 0)] = 20.0
            return logits, state

    batch = task.play(Mover(), problems, torch.Generator().manual_seed(0), greedy=True)
    acting = batch.info["acting"][0]
    assert acting.sum() == 1 + shrdlu.PASS  # L + 6 = 7 moves after one goal step
    rewards = batch.info["rewards"][0][acting]
    # first move reaches the goal (reward 1); the next ones are invalid: column 1 is empty
    assert rewards[0] == 1.0 and torch.allclose(rewards[1:], torch.full((6,), 1.0 - 0.1))
    metrics = task.metrics(torch.zeros(1, 1, ACTIONS + 1), batch)
    assert metrics["success"] == 1 and metrics["optimal"] == 1 and metrics["constraint_error"] == 0
    # success by relation: this goal is "1 below 2"; relations with no goal are left out
    assert task.finalize_metrics(average_metrics(metrics)) == pytest.approx(
        {"sequences": 1, "constraint_error": 0, "success": 1, "optimal": 1,
         "episode_return": float(rewards.sum()), "success_below": 1.0})


def test_problems_follow_the_seed_and_the_lesson():
    make = lambda seed: shrdlu.make_problems(16, torch.Generator().manual_seed(seed), goals=(2, 3),  # noqa: E731
                                            blocks=(3, 4), constraints=(1, 2), depth=(1, 2))
    a, b, c = make(0), make(0), make(1)
    assert torch.equal(a.constraints, b.constraints) and torch.equal(a.boards, b.boards)
    assert not torch.equal(a.boards, c.boards)
    assert set(a.blocks.tolist()) <= {3, 4}
    goals = (a.letters >= 0).sum(1)
    assert goals.min() >= 2 and goals.max() <= 3
    per_goal = a.valid.sum(-1)
    assert per_goal[a.letters >= 0].min() >= 1 and per_goal.max() <= 2
    assert torch.all(shrdlu.legal(a.boards))
    # constraints are not already true at the start, and L moves reach the chosen goal
    constraints, valid = a.chosen_goal()
    assert torch.all(shrdlu.satisfied(a.boards, constraints, valid) < valid.sum(-1))
    assert a.least_moves.min() >= 1 and a.least_moves.max() <= 2


def test_a_batch_of_boards_moves_like_each_board_alone():
    problems = shrdlu.make_problems(12, torch.Generator().manual_seed(3), blocks=(3, 6))
    actions = torch.randint(len(shrdlu.MOVES), (12,), generator=torch.Generator().manual_seed(4))
    together, invalid = shrdlu.move(problems.boards, actions)
    for b in range(12):
        alone, alone_invalid = shrdlu.move(problems.boards[b : b + 1], actions[b : b + 1])
        assert torch.equal(together[b], alone[0]) and invalid[b] == alone_invalid[0]


def test_least_moves_by_breadth_first_search():
    g = shrdlu.graph(3)
    start = g.lookup(board([1, 2, 3], [], []))
    goal = torch.tensor([[[3, 1, 1]]])  # "3 below 1": the stack reversed needs 3 moves
    assert shrdlu.least_moves(g, start, goal, torch.ones(1, 1, dtype=torch.bool), 5).item() == 3
    assert len(shrdlu.graph(6).boards) == 7200


def test_observations_encode_the_goal_phase_and_the_go_cue():
    task = ShrdluTask(curriculum="quick")
    problems = shrdlu.make_problems(4, torch.Generator().manual_seed(0), goals=(2, 2))
    model = DNC(input_size=OBSERVATION, output_size=ACTIONS + 1, hidden_size=8, memory_size=4,
                word_size=4, num_reads=1)
    batch = task.play(model, problems, torch.Generator().manual_seed(0))
    go = 26 + 6 + 4 + 6
    first_act = (batch.info["acting"][0].nonzero()[0]).item()
    assert first_act == 2  # two goals of one constraint each
    assert batch.inputs[0, 0, :26].sum() == 1 and batch.inputs[0, 0, go] == 0
    letter = problems.letters[0, problems.chosen[0]]
    assert batch.inputs[0, first_act, letter] == 1 and batch.inputs[0, first_act, go] == 1
    assert batch.inputs[0, first_act + 1, :26].sum() == 0  # the letter only once
    assert batch.inputs[0, first_act, go + 1:].sum() == 3  # three blocks on the board


def test_advantages_and_returns_by_hand():
    rewards = torch.tensor([[0.0, 1.0, 2.0, 0.0]])
    values = torch.tensor([[0.0, 0.5, 1.0, 9.0]])
    acting = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    returns, advantages = _returns_and_advantages(rewards, values, acting, lam=0.5)
    assert returns[0, 1:3].tolist() == [3.0, 2.0]
    # delta_2 = 2 + 0 - 1 = 1; delta_1 = 1 + 1 - 0.5 = 1.5; A_1 = 1.5 + 0.5 * 1
    assert advantages[0, 2].item() == 1.0 and advantages[0, 1].item() == 2.0


def test_training_runs_in_the_one_loop_and_resumes(tmp_path):
    from torchdnc.training import checkpoint, resolve_config, train

    overrides = {"iterations": "4", "eval_interval": "2", "eval_batches": "1", "batch_size": "4",
                 "progress": "false", "hidden_size": "8", "memory_size": "4", "word_size": "4"}
    config = resolve_config("shrdlu", "quick", overrides)
    train(config, tmp_path / "a")
    resolve = lambda n: resolve_config("shrdlu", "quick", {**overrides, "iterations": n})  # noqa: E731
    train(resolve("2"), tmp_path / "b")
    train(resolve("4"), tmp_path / "b", resume=True)
    a, b = (checkpoint.load(tmp_path / r)["model"] for r in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)  # episodes are drawn from the run's generator
    lstm = resolve_config("shrdlu", "quick", {**overrides, "model": "lstm"})
    train(lstm, tmp_path / "lstm")


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="shrdlu.curriculum: expected one of"):
        ShrdluTask(curriculum="easy")
    with pytest.raises(ValueError, match="shrdlu.lam: expected a number in"):
        ShrdluTask(lam=2)
    with pytest.raises(ValueError, match="episodes depend on the agent"):
        ShrdluTask().sample(2, torch.Generator())


def test_a_share_of_training_episodes_comes_from_earlier_lessons():
    task = ShrdluTask(curriculum="quick", earlier_fraction=1.0)
    model = DNC(input_size=OBSERVATION, output_size=ACTIONS + 1, hidden_size=8, memory_size=4,
                word_size=4, num_reads=1)
    levels = task.levels()
    blocks = lambda batch: batch.inputs[:, 0, -54:].sum(1)  # noqa: E731  (the start board)
    batch = task.training_batch(model, 32, torch.Generator().manual_seed(0), **levels[4])
    assert (blocks(batch) == 3).sum() > 8  # lessons 1-4: mostly 3 blocks; lesson 5 has 4
    none = ShrdluTask(curriculum="quick", earlier_fraction=0.0)
    batch = none.training_batch(model, 32, torch.Generator().manual_seed(0), **levels[4])
    assert (blocks(batch) == 4).all()


def test_evaluation_grid_over_goals_and_constraints():
    task = ShrdluTask(curriculum="quick")
    grid = task.generalisation()
    assert len(grid) == 8 and "4 goals, up to 2 constraints" in grid
    for name, params in grid.items():
        goals, constraints = int(name[0]), int(name.split("up to ")[1][0])
        problems = task.problems(16, torch.Generator().manual_seed(0), **params)
        assert (problems.letters >= 0).sum(1).eq(goals).all()
        assert (problems.blocks == 3).all()
        per_goal = problems.valid.sum(-1)[(problems.letters >= 0)]
        assert per_goal.max() <= constraints and per_goal.min() >= 1
        assert per_goal.float().mean() >= constraints - 0.9  # fewer only where a board allows no more
