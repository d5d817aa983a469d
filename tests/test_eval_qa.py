"""Gym-QA parsing and scoring on a small hand-made question file."""

import json

import numpy as np
import pytest

from sefar_fast.errors import SefarError
from sefar_fast.eval.qa import load_qa, parse_options, score_qa, score_qa_file, video_name

PROMPT = "What gymnastics move is this athlete performing?"
CLASSES = [
    "salto backward stretched",                                          # 0
    "round-off, flic-flac with 0.5 turn on, stretched salto forward",    # 1
    "(swing forward) double salto backward tucked",                      # 2
    "giant circle backward with 1.5 turn to handstand",                  # 3
    "Yurchenko 1.5 twist (vault) grp. C. 2",                             # 4: contains a " C." marker itself
    "split leap with 1 turn",                                            # 5
]


def question(*names):
    return PROMPT + " " + " ".join(f"{letter}.{name}" for letter, name in zip("ABCD", names))


def write_qa(tmp_path, entries):
    path = tmp_path / "val.json"
    path.write_text(json.dumps({
        key: {"question": q, "answer": a, "answer_type": "what", "question_id": key, "dataset": "finegym",
              "video": v, "frame_length": 40}
        for key, (q, a, v) in entries.items()
    }))
    return path


def test_parse_options_on_markers_with_dots_commas_parentheses():
    q = question(CLASSES[1], CLASSES[2], CLASSES[0], CLASSES[3])
    assert parse_options(q) == [CLASSES[1], CLASSES[2], CLASSES[0], CLASSES[3]]
    # without known names the first markers win and the dotted name is cut; with them, the right cut is found
    tricky = question(CLASSES[5], CLASSES[4], CLASSES[0], CLASSES[2])
    assert parse_options(tricky)[1] == "Yurchenko 1.5 twist (vault) grp."
    known = {name.casefold() for name in CLASSES}
    assert parse_options(tricky, known) == [CLASSES[5], CLASSES[4], CLASSES[0], CLASSES[2]]


def test_load_and_score(tmp_path):
    path = write_qa(tmp_path, {
        "0000001": (question(CLASSES[1], CLASSES[2], CLASSES[0], CLASSES[3]), "C", "vidA"),
        "0000002": (question(CLASSES[5], CLASSES[4], CLASSES[0], CLASSES[2]), "B", "vidB"),
        # extra spaces and other case still match the class names
        "0000003": (question("SALTO  backward stretched", CLASSES[5], CLASSES[3], CLASSES[2]), "B", "vidC"),
        "0000004": (question(CLASSES[0], CLASSES[1], CLASSES[2], CLASSES[3]), "D", "vid_missing"),
    })
    questions = load_qa(path, CLASSES)
    assert [q.option_classes for q in questions] == [((1,), (2,), (0,), (3,)), ((5,), (4,), (0,), (2,)),
                                                     ((0,), (5,), (3,), (2,)), ((0,), (1,), (2,), (3,))]
    assert [q.answer for q in questions] == [2, 1, 1, 3]

    probs = {
        # the top class overall (5) is not an option; among the options, class 0 (C) is highest: right
        "vidA": np.array([0.30, 0.10, 0.05, 0.05, 0.0, 0.50]),
        # options 5, 4, 0, 2: class 2 (D) highest: wrong (answer B)
        "vidB": np.array([0.10, 0.0, 0.40, 0.0, 0.20, 0.30]),
        # options 0, 5, 3, 2: class 5 (B) highest: right
        "vidC": np.array([0.10, 0.0, 0.0, 0.0, 0.0, 0.90]),
    }
    result = score_qa(questions, probs)
    assert (result.num_questions, result.num_scored, result.num_correct) == (4, 3, 2)
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.chance == pytest.approx(0.25)
    assert result.missing_videos == ("vid_missing",)
    assert result.summary()["qa_missing_videos"] == 1


def test_unknown_option_name_names_file_key_and_name(tmp_path):
    path = write_qa(tmp_path, {"0000009": (question(CLASSES[0], "handspring forward", CLASSES[2], CLASSES[3]),
                                           "A", "v")})
    with pytest.raises(SefarError) as err:
        load_qa(path, CLASSES)
    message = str(err.value)
    assert str(path) in message and "0000009" in message and "'handspring forward'" in message


def test_bad_answer_and_bad_files(tmp_path):
    path = write_qa(tmp_path, {"0000001": (question(*CLASSES[:4]), "E", "v")})
    with pytest.raises(SefarError, match="answer 'E'"):
        load_qa(path, CLASSES)
    with pytest.raises(SefarError, match="does not exist"):
        load_qa(tmp_path / "nope.json", CLASSES)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(SefarError, match="not valid JSON"):
        load_qa(broken, CLASSES)


def test_scores_with_too_few_classes_are_refused(tmp_path):
    path = write_qa(tmp_path, {"0000001": (question(CLASSES[0], CLASSES[5], CLASSES[1], CLASSES[2]), "A", "v")})
    with pytest.raises(SefarError, match="have 3 classes"):
        score_qa(load_qa(path, CLASSES), {"v": np.ones(3) / 3})


def test_score_qa_file_matches_clip_ids_by_basename(tmp_path):
    path = write_qa(tmp_path, {
        "0000001": (question(CLASSES[0], CLASSES[5], CLASSES[1], CLASSES[2]), "B", "abc_E_000001_000010"),
        "0000002": (question(CLASSES[0], CLASSES[5], CLASSES[1], CLASSES[2]), "A", "zzz"),
    })
    scores = {"/videos/abc_E_000001_000010.mp4": np.array([0.1, 0.0, 0.0, 0.0, 0.0, 0.9])}
    summary = score_qa_file(path, CLASSES, scores)
    assert summary["qa_accuracy"] == 1.0 and summary["qa_scored"] == 1 and summary["qa_missing_videos"] == 1
    json.dumps(summary)
    assert video_name("a/b/clip.v2") == "clip.v2"  # only video extensions are stripped


# gym99's class names as the preset gives them (FineGym's event prefix), with the two names that
# Gym-QA's bare option texts share between classes
GYM99 = {34: "(FX) salto backward stretched with 2.5 twist", 58: "(BB) salto backward tucked",
         70: "(BB) salto backward tucked", 73: "(BB) salto backward stretched with 2.5 twist",
         68: "(BB) round-off", 84: "(UB) clear pike circle backward with 1 turn to handstand",
         96: "(UB) (swing forward) double salto backward tucked with 1 turn"}


def test_gym_qa_bare_names_match_event_prefixed_classes(tmp_path):
    names = [GYM99.get(i, f"(VT) vault {i}") for i in range(99)]
    # as in the official all99_5 files, where question 0000030 offers the same text as B and D
    path = write_qa(tmp_path, {
        "0000030": (question("vault 3", "salto backward stretched with 2.5 twist",
                             "(swing forward) double salto backward tucked with 1 turn",
                             "salto backward stretched with 2.5 twist"), "A", "v30"),
        "0000031": (question("round-off", "salto backward tucked",
                             "clear pike circle backward with 1 turn to handstand", "vault 5"), "B", "v31"),
    })
    q30, q31 = load_qa(path, names)
    assert q30.option_classes == ((3,), (34, 73), (96,), (34, 73)) and q30.answer == 0
    assert q31.option_classes == ((68,), (58, 70), (84,), (5,))
    probs = np.zeros(99)
    probs[[58, 70, 68]] = [0.2, 0.2, 0.3]  # "salto backward tucked" as a whole (0.4) beats round-off (0.3)
    assert score_qa([q31], {"v31": probs}).num_correct == 1
    probs = np.zeros(99)
    probs[[3, 34, 73]] = [0.4, 0.3, 0.3]  # the shared name sums to 0.6: B (and D, tied) beat the right A
    result = score_qa([q30], {"v30": probs})
    assert result.num_correct == 0
    probs[3] = 0.7
    assert score_qa([q30], {"v30": probs}).num_correct == 1
