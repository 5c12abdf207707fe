"""The bAbI question-answering tasks (Weston et al. 2015, v1.2): reader and encoding.

File format (the release's README): one line per sentence, ``ID text``;
a question line is ``ID question<TAB>answer<TAB>supporting fact IDs``. IDs
count from 1 within a story, and an ID of 1 starts a new story. Answers of
task 8 (lists) and task 19 (path finding) are several words separated by
commas ("apple,football", "n,w").

Encoding, as in Graves et al. 2016 (Methods, "bAbI task descriptions"):
numbers removed, words lower-cased, one word per time step, '.' and '?' as
tokens of their own, and after each question one '-' step per answer word,
at which the model must output that word:

    mary moved to the bathroom . where is mary ? -        (answer: bathroom)

The vocabulary is built from the training files: the words of statements,
questions and answers plus the three symbols '.', '?' and '-'. On en-10k
(task 3 from its 1k training file, see `training_file`) that gives 156 words
+ 3 symbols = 159, the paper's count: the test files add no word, and the
answer words ("n", "s", "e", "w", "yes", "none", "three", ...) that never
occur in a story must be counted for the outputs to be able to say them.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import torch
from torch import Tensor

from torchdnc.data.cache import babi_cache, is_complete

# The 20 tasks of the release, in order; file names are qa{N}_{name}_{split}.txt.
TASK_NAMES = (
    "single-supporting-fact", "two-supporting-facts", "three-supporting-facts",
    "two-arg-relations", "three-arg-relations", "yes-no-questions", "counting",
    "lists-sets", "simple-negation", "indefinite-knowledge", "basic-coreference",
    "conjunction", "compound-coreference", "time-reasoning", "basic-deduction",
    "basic-induction", "positional-reasoning", "size-reasoning", "path-finding",
    "agents-motivations",
)
ALL_TASKS = tuple(range(1, len(TASK_NAMES) + 1))
ANSWER_TOKEN = "-"  # input at the steps where an answer word is due
SYMBOLS = (".", "?", ANSWER_TOKEN)
ENV_DATA_DIR = "TORCHDNC_BABI_DIR"
NO_TARGET = -1  # in the target and question-index arrays: not an answer step


class BabiFallbackWarning(UserWarning):
    """A training file was missing and the 1k file of the task was used instead."""


# -- reading ---------------------------------------------------------------------


class Statement(NamedTuple):
    """A sentence of a story: its ID within the story, words, file line number."""

    line_id: int
    words: tuple[str, ...]
    line: int


class Question(NamedTuple):
    """A question, its answer words and the IDs of its supporting statements."""

    line_id: int
    words: tuple[str, ...]
    answer: tuple[str, ...]
    supporting: tuple[int, ...]
    line: int


class Story(NamedTuple):
    """Statements and questions in order, from ``source`` (task number ``task``)."""

    task: int
    lines: tuple[Statement | Question, ...]
    source: str

    @property
    def questions(self) -> list[Question]:
        return [line for line in self.lines if isinstance(line, Question)]


def tokenize(text: str) -> tuple[str, ...]:
    """Lower-cased words, with '.' and '?' split off as tokens of their own.

    Words are interned: en-10k repeats its 159 symbols five million times.
    """
    text = text.lower().replace(".", " . ").replace("?", " ? ")
    return tuple(map(sys.intern, text.split()))


def parse_lines(lines: Iterable[str], source: str = "<text>", task: int = 0) -> list[Story]:
    """Stories from the lines of a bAbI file (``source`` names it in errors).

    Raises:
        ValueError: ``"{source}:{line}: ..."`` for a malformed line.
    """
    stories: list[Story] = []
    current: list[Statement | Question] = []
    previous_id = 0
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        head, _, rest = line.partition(" ")
        if not head.isdigit() or not rest.strip():
            raise _malformed(source, number, line, "expected 'ID text' with a positive integer ID")
        line_id = int(head)
        if line_id == 1:
            if current:
                stories.append(Story(task, tuple(current), source))
            current = []
        elif line_id != previous_id + 1:
            raise _malformed(source, number, line,
                             f"line ID {line_id} does not follow {previous_id} (a story starts at 1)")
        previous_id = line_id
        if "\t" not in rest:
            current.append(Statement(line_id, tokenize(rest), number))
            continue
        fields = rest.split("\t")
        if len(fields) != 3:
            raise _malformed(source, number, line, "a question line needs 3 tab-separated fields "
                             f"(question, answer, supporting IDs), found {len(fields)}")
        text, answer_field, support_field = fields
        words = tokenize(text)
        answer = tuple(sys.intern(word.strip().lower()) for word in answer_field.split(","))
        if not words or not all(answer) or any(" " in word for word in answer):
            raise _malformed(source, number, line,
                             "empty question or answer (answer words are separated by commas)")
        try:
            supporting = tuple(int(token) for token in support_field.split())
        except ValueError:
            raise _malformed(source, number, line,
                             "supporting fact IDs must be integers separated by spaces") from None
        if any(not 1 <= fact < line_id for fact in supporting):
            raise _malformed(source, number, line,
                             f"supporting fact IDs {list(supporting)} must lie in 1..{line_id - 1}")
        current.append(Question(line_id, words, answer, supporting, number))
    if current:
        stories.append(Story(task, tuple(current), source))
    return stories


def _malformed(source: str, number: int, line: str, reason: str) -> ValueError:
    return ValueError(f"{source}:{number}: {reason}: {line!r}")


def parse_file(path: Path | str, task: int = 0) -> list[Story]:
    """Stories of one bAbI file; a missing file raises FileNotFoundError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bAbI file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            stories = parse_lines(handle, str(path), task)
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); "
                         "is it a bAbI file?") from None
    if not stories:
        raise ValueError(f"{path}: no stories in this file (empty?); is it a bAbI file?")
    return stories


# -- where the files are -----------------------------------------------------------


def data_dir_candidates() -> list[Path]:
    """Folders tried for the data when none is given, in order.

    ``$TORCHDNC_BABI_DIR`` if set (and nothing else); else the downloaded copy
    in the user cache (`torchdnc.data.cache`, when complete), then
    ``../shared/data/babi`` relative to the working directory and to the
    repository this package lives in. (`torchdnc.data.download.locate_babi`
    downloads the data when none of these exists.)
    """
    if os.environ.get(ENV_DATA_DIR):
        return [Path(os.environ[ENV_DATA_DIR])]
    repo_root = Path(__file__).resolve().parents[3]  # src/torchdnc/data/babi.py
    candidates = [Path.cwd() / ".." / "shared" / "data" / "babi",
                  repo_root / ".." / "shared" / "data" / "babi"]
    cached = [babi_cache()] if is_complete(babi_cache()) else []
    return cached + list(dict.fromkeys(path.resolve() for path in candidates))


def resolve_data_dir(data_dir: Path | str | None = None) -> Path:
    """The bAbI folder (holding ``en/`` and ``en-10k/``): ``data_dir`` or the default."""
    if data_dir:
        path = Path(data_dir)
        if not path.is_dir():
            raise FileNotFoundError(f"bAbI data folder not found: {path}")
        return path
    tried = data_dir_candidates()
    for path in tried:
        if path.is_dir():
            return path
    raise FileNotFoundError(
        "bAbI data folder not found; tried " + ", ".join(str(p) for p in tried)
        + f" (run `torchdnc data babi`, or set ${ENV_DATA_DIR} or the task option data_dir)")


def task_file(root: Path | str, task: int, split: str, ten_k: bool = True) -> Path:
    """The path of a task's ``split`` ("train" or "test") file under ``root``."""
    if task not in ALL_TASKS:
        raise ValueError(f"bAbI task: expected a number in 1..20, got {task!r}")
    if split not in ("train", "test"):
        raise ValueError(f"bAbI split: expected 'train' or 'test', got {split!r}")
    folder = "en-10k" if ten_k else "en"
    return Path(root) / folder / f"qa{task}_{TASK_NAMES[task - 1]}_{split}.txt"


def training_file(root: Path | str, task: int, ten_k: bool = True) -> tuple[Path, str | None]:
    """A task's training file and, when it is not the one asked for, why.

    The copy of the data here lacks ``en-10k/qa3_three-supporting-facts_train.txt``:
    a missing 10k training file falls back to the task's 1k file (with a
    `BabiFallbackWarning` and a note that says so). A missing 1k file, or a
    missing 10k file without a 1k file, raises FileNotFoundError naming it.
    """
    wanted = task_file(root, task, "train", ten_k)
    if wanted.is_file() or not ten_k:
        if not wanted.is_file():
            raise FileNotFoundError(f"bAbI file not found: {wanted}")
        return wanted, None
    fallback = task_file(root, task, "train", ten_k=False)
    if not fallback.is_file():
        raise FileNotFoundError(f"bAbI file not found: {wanted} (nor the 1k file {fallback})")
    note = (f"task {task}: {wanted} is missing; trained on the 1k file {fallback} "
            f"(1,000 instead of 10,000 training questions)")
    warnings.warn(note, BabiFallbackWarning, stacklevel=2)
    return fallback, note


# -- vocabulary and encoding --------------------------------------------------------


@dataclass(frozen=True)
class Vocabulary:
    """Words by index: the three symbols '.', '?', '-' first, then sorted words."""

    words: tuple[str, ...]

    @classmethod
    def from_stories(cls, stories: Iterable[Story]) -> "Vocabulary":
        seen: set[str] = set()
        for story in stories:
            for line in story.lines:
                seen.update(line.words)
                if isinstance(line, Question):
                    seen.update(line.answer)
        return cls(SYMBOLS + tuple(sorted(seen - set(SYMBOLS))))

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return {word: i for i, word in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def decode(self, indices: Iterable[int]) -> list[str]:
        return [self.words[i] for i in indices]


class EncodedStory(NamedTuple):
    """One story as time steps: input words, answer word or None, question index or -1."""

    inputs: list[str]
    answers: list[str | None]
    question_index: list[int]


def encode_story(story: Story) -> EncodedStory:
    """The paper's word sequence of a story, with the answer due at each '-' step."""
    inputs: list[str] = []
    answers: list[str | None] = []
    question_index: list[int] = []
    asked = 0
    for line in story.lines:
        inputs.extend(line.words)
        answers.extend([None] * len(line.words))
        question_index.extend([NO_TARGET] * len(line.words))
        if isinstance(line, Question):
            inputs.extend([ANSWER_TOKEN] * len(line.answer))
            answers.extend(line.answer)
            question_index.extend([asked] * len(line.answer))
            asked += 1
    return EncodedStory(inputs, answers, question_index)


@dataclass(frozen=True)
class EncodedStories:
    """Stories as flat index arrays, sliced by ``offsets`` (S stories, L steps in all).

    Attributes:
        tokens: ``[L]`` input word indices.
        targets: ``[L]`` answer word index at '-' steps, -1 elsewhere.
        question_index: ``[L]`` index of the question within its story at '-' steps, -1 elsewhere.
        offsets: ``[S + 1]`` where each story starts in the flat arrays.
        tasks: ``[S]`` bAbI task number of each story.
        questions: ``[S]`` number of questions in each story.
    """

    tokens: Tensor
    targets: Tensor
    question_index: Tensor
    offsets: Tensor
    tasks: Tensor
    questions: Tensor

    @property
    def lengths(self) -> Tensor:
        """``[S]`` time steps per story."""
        return self.offsets[1:] - self.offsets[:-1]

    def __len__(self) -> int:
        return len(self.tasks)

    def padded(self, indices: Sequence[int] | Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Index arrays of stories ``indices`` padded to the longest of them.

        Returns:
            ``tokens``, ``targets``, ``question_index`` (each ``[B, T]``, -1 on
            padding, so ``tokens`` must be masked) and ``valid`` ``[B, T]`` bool.
        """
        indices = torch.as_tensor(indices, dtype=torch.long)
        starts, lengths = self.offsets[indices], self.lengths[indices]
        steps = int(lengths.max()) if len(indices) else 0
        time = torch.arange(steps)
        valid = time[None, :] < lengths[:, None]
        positions = (starts[:, None] + time[None, :]).clamp(max=max(len(self.tokens) - 1, 0))

        def gather(values: Tensor) -> Tensor:
            return torch.where(valid, values[positions].long(), torch.full_like(positions, NO_TARGET))

        return gather(self.tokens), gather(self.targets), gather(self.question_index), valid


def encode_stories(stories: Sequence[Story], vocabulary: Vocabulary) -> EncodedStories:
    """`encode_story` for each story, as word indices in ``vocabulary``.

    Raises:
        ValueError: a word is not in the vocabulary (named with its file and line).
    """
    index = vocabulary.index
    tokens: list[int] = []
    targets: list[int] = []
    question_index: list[int] = []
    offsets = [0]
    for story in stories:
        encoded = encode_story(story)
        try:
            tokens.extend(index[word] for word in encoded.inputs)
            targets.extend(NO_TARGET if word is None else index[word] for word in encoded.answers)
        except KeyError as error:
            line = next(l.line for l in story.lines
                        if error.args[0] in l.words or error.args[0] in getattr(l, "answer", ()))
            raise ValueError(f"{story.source}:{line}: word {error.args[0]!r} is not in the "
                             "vocabulary built from the training files") from None
        question_index.extend(encoded.question_index)
        offsets.append(len(tokens))
    # int16 keeps the 5 million steps of en-10k small; indices are widened per batch.
    word_type = torch.int16 if len(vocabulary) <= torch.iinfo(torch.int16).max else torch.int32
    return EncodedStories(
        tokens=torch.tensor(tokens, dtype=word_type),
        targets=torch.tensor(targets, dtype=word_type),
        question_index=torch.tensor(question_index, dtype=torch.int16),
        offsets=torch.tensor(offsets, dtype=torch.long),
        tasks=torch.tensor([story.task for story in stories], dtype=torch.long),
        questions=torch.tensor([len(story.questions) for story in stories], dtype=torch.long),
    )
