"""bAbI parsing, loading and story splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmt_scale.data import find_task_file, load_babi_dir, parse_babi_file, split_by_story
from rmt_scale.errors import DataError

GOOD = "1 Mary moved to the bathroom.\n2 John went to the hallway.\n3 Where is Mary? \tbathroom\t1\n"


def test_all_real_tasks_parse_with_1000_questions(babi_en: Path) -> None:
    files = sorted(babi_en.glob("qa*_*_train.txt"))
    assert len(files) == 20
    for path in files:
        samples = parse_babi_file(path)
        assert len(samples) == 1000, path
        for sample in samples:
            assert sample.facts and sample.question and sample.answer
            assert len(sample.supporting_ids) == len(sample.supporting_facts)
            assert all(0 <= i < len(sample.facts) for i in sample.supporting_facts)


def test_real_qa1_first_story(babi_en: Path) -> None:
    samples = parse_babi_file(next(babi_en.glob("qa1_*_train.txt")))
    first, fifth, sixth = samples[0], samples[4], samples[5]
    assert first.task == "qa1" and first.story == 0
    assert first.facts == ("Mary moved to the bathroom.", "John went to the hallway.")
    assert (first.question, first.answer, first.supporting_ids) == ("Where is Mary?", "bathroom", (1,))
    # Context is every statement before the question, questions excluded.
    assert len(fifth.facts) == 10 and fifth.supporting_ids == (8,)
    assert fifth.facts[fifth.supporting_facts[0]] == "Sandra journeyed to the bathroom."
    assert sixth.story == 1 and len(sixth.facts) == 2


def test_multiple_supporting_ids_keep_file_order(babi_en: Path) -> None:
    sample = parse_babi_file(next(babi_en.glob("qa3_*_train.txt")))[0]
    assert sample.supporting_ids == (23, 17, 5)
    assert sample.answer == "office"


def test_crlf_and_bom_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "qa1_x_train.txt"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.replace("\n", "\r\n").encode())
    (sample,) = parse_babi_file(path)
    assert sample.answer == "bathroom" and sample.facts[0] == "Mary moved to the bathroom."


MALFORMED = {
    "non_consecutive_id": (b"1 A b.\n2 C d.\n4 E f.\n5 Q? \tx\t1\n", 3, "does not follow"),
    "first_id_not_1": (b"2 A b.\n3 Q? \tx\t2\n", 1, "does not follow"),
    "two_tab_fields": (b"1 Mary moved.\n2 Where is Mary? \tbathroom\n", 2, "2 tab-separated"),
    "four_tab_fields": (b"1 Mary moved.\n2 Where? \tb\t1\t1\n", 2, "4 tab-separated"),
    "support_not_before": (b"1 Mary moved.\n2 Where is Mary? \tb\t2\n", 2, "not a line before"),
    "support_is_question": (b"1 A b.\n2 Q? \tx\t1\n3 Q? \tx\t2\n", 3, "is a question"),
    "support_not_numeric": (b"1 A b.\n2 Q? \tx\tone\n", 2, "not space-separated numbers"),
    "non_numeric_id": (b"1 A b.\nx C d.\n3 Q? \tx\t1\n", 2, "not a number"),
    "no_space_after_id": (b"1 A b.\n2\n", 2, "expected 'ID text'"),
    "empty_file": (b"", 1, "empty file"),
    "undecodable": (b"1 A b.\n2 C \xff d.\n3 Q? \tx\t1\n", 2, "not UTF-8"),
    "truncated_last_line": (b"1 Mary moved.\n2 Where is Mary? \tbath", 2, "no newline"),
    "ends_with_statement": (b"1 A b.\n2 Q? \tx\t1\n3 C d.\n", 3, "truncated"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_names_file_and_line(tmp_path: Path, case: str) -> None:
    content, lineno, reason = MALFORMED[case]
    path = tmp_path / "qa1_bad_train.txt"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        parse_babi_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{lineno}: "), message
    assert reason in message
    assert "\n" not in message


def test_split_holds_out_whole_stories(babi_en: Path) -> None:
    samples = parse_babi_file(next(babi_en.glob("qa2_*_train.txt")))
    train, valid = split_by_story(samples, valid_fraction=0.1, seed=0)
    assert len(train) + len(valid) == len(samples)
    assert not {s.story for s in train} & {s.story for s in valid}
    assert len({s.story for s in valid}) == 20  # 10% of 200 stories
    again_train, again_valid = split_by_story(samples, valid_fraction=0.1, seed=0)
    assert again_train == train and again_valid == valid
    _, other_valid = split_by_story(samples, valid_fraction=0.1, seed=1)
    assert {s.story for s in other_valid} != {s.story for s in valid}


def test_load_babi_dir_splits_and_file_choice(tmp_path: Path) -> None:
    story = GOOD
    (tmp_path / "qa1_single_train.txt").write_text(story * 10)
    (tmp_path / "qa10_other_train.txt").write_text(story)
    (tmp_path / "qa1_single_test.txt").write_text(story * 3)
    train = load_babi_dir("qa1", tmp_path, "train", valid_fraction=0.2)
    valid = load_babi_dir("qa1", tmp_path, "validation", valid_fraction=0.2)
    assert (len(train), len(valid)) == (8, 2)
    assert not {s.story for s in train} & {s.story for s in valid}
    assert len(load_babi_dir("qa1", tmp_path, "test")) == 3
    assert find_task_file("qa1", tmp_path, "train").name == "qa1_single_train.txt"
    with pytest.raises(DataError, match="qa10_\\*_test.txt"):
        load_babi_dir("qa10", tmp_path, "test")
    with pytest.raises(DataError, match="unknown bAbI task"):
        load_babi_dir("qa21", tmp_path)
    with pytest.raises(DataError, match="unknown split"):
        load_babi_dir("qa1", tmp_path, "dev")


def test_valid_file_is_preferred_over_held_out_stories(tmp_path: Path) -> None:
    (tmp_path / "qa1_train.txt").write_text(GOOD * 4)
    (tmp_path / "qa1_valid.txt").write_text(GOOD)
    assert len(load_babi_dir("qa1", tmp_path, "train")) == 4
    assert len(load_babi_dir("qa1", tmp_path, "validation")) == 1


def test_hub_fallback_converts_babi_qa_schema(monkeypatch) -> None:
    # Offline stand-in for datasets.load_dataset("facebook/babi_qa", "en-qa1", split="train").
    import datasets

    from rmt_scale.data import load_babi_hub

    story = {"id": ["1", "2", "3"], "type": [0, 0, 1],
             "text": ["Mary moved to the bathroom.", "John went to the hallway.", "Where is Mary?"],
             "supporting_ids": [[], [], ["1"]], "answer": ["", "", "bathroom"]}
    calls = []

    def fake_load_dataset(name, config, split):
        calls.append((name, config, split))
        return datasets.Dataset.from_dict({"story": [story, story]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    samples = load_babi_hub("qa1", "facebook/babi_qa", "test")
    assert calls == [("facebook/babi_qa", "en-qa1", "test")]
    assert [s.story for s in samples] == [0, 1]
    assert samples[0].facts == ("Mary moved to the bathroom.", "John went to the hallway.")
    assert (samples[0].answer, samples[0].supporting_facts) == ("bathroom", (0,))
