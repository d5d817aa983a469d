"""Gym-QA multiple-choice scoring from a classifier's clip probabilities.

A Gym-QA file is a JSON object keyed by question id; each value holds
`question` ("What gymnastics move is this athlete performing? A.<name> B.<name>
C.<name> D.<name>"), `answer` (a letter) and `video` (the clip basename without
extension). A classifier answers by picking the option whose class it gives the
highest probability, so QA accuracy is classification restricted to the four
offered classes.

Option names are fine-grained move names that may themselves contain dots,
commas and parentheses, so the question is cut at the " A." " B." ... markers,
and where a marker-like text could also sit inside a name, the cut whose pieces
are all known class names wins. Names match class names after collapsing
whitespace and case and dropping FineGym's event prefix: Gym-QA writes
"salto backward tucked" where gym99's class is "(BB) salto backward tucked".
Without the prefix some names are shared by several classes (gym99 has "salto
backward tucked" twice on the beam and "salto backward stretched with 2.5 twist"
on floor and beam); such an option stands for all of them and scores their
summed probability, so two options with the same text tie (the earlier letter
wins), as the question itself cannot tell them apart.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from sefar_fast.errors import SefarError
from sefar_fast.eval.metrics import as_numpy

EVENT_PREFIX = re.compile(r"^\s*\((?:VT|FX|BB|UB)\)\s*")  # FineGym's vault, floor, beam, bars


def normalise_name(name: str) -> str:
    return " ".join(EVENT_PREFIX.sub("", name).split()).casefold()


def _marker_positions(question: str, letter: str) -> list[int]:
    """Start indices of the option texts that follow a whitespace-preceded "<letter>." marker."""
    return [m.end() for m in re.finditer(rf"(?<=\s){letter}\.", question)]


def _cuts(question: str) -> list[list[str]]:
    """Every way of cutting the question into options A, B, ... (most options and earliest markers first)."""
    positions = []
    for letter in string.ascii_uppercase:
        found = _marker_positions(question, letter)
        if not found or (positions and found[-1] <= positions[-1][0]):
            break
        positions.append(found)
    cuts = []
    for count in range(len(positions), 1, -1):
        for starts in itertools.product(*positions[:count]):
            if any(b <= a + 2 for a, b in zip(starts, starts[1:])):  # markers in order, names non-empty
                continue
            ends = [s - 2 for s in starts[1:]] + [len(question)]  # -2: drop the next marker's "X."
            names = [question[s:e].strip() for s, e in zip(starts, ends)]
            if all(names):
                cuts.append(names)
    return cuts


def parse_options(question: str, known_names: set[str] | None = None) -> list[str]:
    """Option names of a question, in letter order.

    With `known_names` (normalised), the first cut whose names are all known is
    returned; without it (or when no cut is fully known) the cut at the first
    markers, which is the right one unless a name contains " X." itself.
    """
    cuts = _cuts(question)
    if not cuts:
        return []
    if known_names is not None:
        for names in cuts:
            if all(normalise_name(n) in known_names for n in names):
                return names
    return cuts[0]


@dataclass(frozen=True)
class QAQuestion:
    key: str
    video: str
    options: tuple[str, ...]
    option_classes: tuple[tuple[int, ...], ...]  # the classes each option names (several: a shared name)
    answer: int  # index into options


def load_qa(path: str | Path, class_names: Sequence[str]) -> list[QAQuestion]:
    """Read a Gym-QA json and map every option to a class id; SefarError on anything unusable."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SefarError(f"QA file {path} does not exist; pass the Gym-QA json (e.g. qa_datasets/all99_5/val.json)")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SefarError(f"QA file {path} is not valid JSON ({e}); re-download it")
    if not isinstance(data, dict):
        raise SefarError(f"QA file {path} must hold a JSON object keyed by question id")

    ids_by_name: dict[str, list[int]] = {}
    for class_id, name in enumerate(class_names):
        ids_by_name.setdefault(normalise_name(name), []).append(class_id)
    known = set(ids_by_name)

    questions = []
    for key, entry in data.items():
        where = f"QA file {path}, question {key!r}"
        if not isinstance(entry, dict) or not all(k in entry for k in ("question", "answer", "video")):
            raise SefarError(f"{where}: needs 'question', 'answer' and 'video'")
        options = parse_options(str(entry["question"]), known)
        if len(options) < 2:
            raise SefarError(f"{where}: found no ' A.' ' B.' ... options in {entry['question']!r}")
        classes = []
        for name in options:
            ids = ids_by_name.get(normalise_name(name))
            if ids is None:
                raise SefarError(f"{where}: option {name!r} is not one of the {len(class_names)} class names; "
                                 "is the QA file for another class list?")
            classes.append(tuple(ids))
        letter = str(entry["answer"]).strip().upper()
        answer = string.ascii_uppercase.find(letter) if len(letter) == 1 else -1
        if not 0 <= answer < len(options):
            raise SefarError(f"{where}: answer {entry['answer']!r} is not one of the letters "
                             f"A..{string.ascii_uppercase[len(options) - 1]}")
        questions.append(QAQuestion(str(key), str(entry["video"]), tuple(options), tuple(classes), answer))
    return questions


@dataclass(frozen=True)
class QAResult:
    num_questions: int
    num_scored: int  # questions whose video has scores
    num_correct: int
    accuracy: float  # num_correct / num_scored; NaN when nothing was scored
    chance: float  # mean of 1 / number of options over the scored questions
    missing_videos: tuple[str, ...]  # sorted, unique

    def summary(self) -> dict:
        return {
            "qa_accuracy": None if math.isnan(self.accuracy) else self.accuracy,
            "qa_chance": None if math.isnan(self.chance) else self.chance,
            "qa_questions": self.num_questions,
            "qa_scored": self.num_scored,
            "qa_correct": self.num_correct,
            "qa_missing_videos": len(self.missing_videos),
        }


def score_qa(questions: Sequence[QAQuestion], scores_by_video: Mapping[str, Any]) -> QAResult:
    """Answer each question with the option of highest probability (ties: the earlier letter); an
    option naming several classes has their summed probability.

    scores_by_video maps a clip basename (the QA `video`) to its class
    probabilities [C]; questions whose video is absent are counted as missing.
    """
    scored = correct = 0
    chance_sum = 0.0
    missing = set()
    for q in questions:
        scores = scores_by_video.get(q.video)
        if scores is None:
            missing.add(q.video)
            continue
        scores = as_numpy(scores, np.float64).reshape(-1)
        highest = max(max(ids) for ids in q.option_classes)
        if highest >= len(scores):
            raise SefarError(f"scores for video {q.video!r} have {len(scores)} classes; "
                             f"question {q.key!r} needs class {highest}")
        pick = int(np.argmax([scores[list(ids)].sum() for ids in q.option_classes]))
        scored += 1
        correct += pick == q.answer
        chance_sum += 1.0 / len(q.options)
    nan = float("nan")
    return QAResult(
        num_questions=len(questions),
        num_scored=scored,
        num_correct=correct,
        accuracy=correct / scored if scored else nan,
        chance=chance_sum / scored if scored else nan,
        missing_videos=tuple(sorted(missing)),
    )


VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov")


def video_name(clip_id: str) -> str:
    """The QA `video` form of a clip id: its basename without a video extension."""
    name = Path(str(clip_id)).name
    return name[: -len(name.rsplit(".", 1)[-1]) - 1] if name.lower().endswith(VIDEO_SUFFIXES) else name


def score_qa_file(path: str | Path, class_names: Sequence[str], scores_by_clip: Mapping[str, Any]) -> dict:
    """Load a Gym-QA json, answer it from clip-id-keyed probabilities, and return a JSON-ready summary."""
    by_video = {video_name(clip_id): scores for clip_id, scores in scores_by_clip.items()}
    result = score_qa(load_qa(path, class_names), by_video)
    return {"qa_file": str(path), **result.summary()}
