"""Text for a language model: where it comes from, how it splits, prompts that never repeat, and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from greencompress.core.errors import DataError
from greencompress.models.corpus import Corpus, texts
from greencompress.models.data import DataSpec


def spec(**settings) -> DataSpec:
    return DataSpec.model_validate({"kind": "text", **settings})


def test_the_shipped_plays_evaluate_and_calibrate_apart():
    evaluation, calibration, description = texts(spec())
    assert "Macbeth" in description and "The Tempest" in description
    assert "Fair is foul" in "".join(evaluation) and "Fair is foul" not in "".join(calibration)


def test_a_plain_file_is_cut_once_at_a_line_break_its_end_evaluating(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("".join(f"line {n}\n" for n in range(100)))
    evaluation, calibration, _ = texts(spec(path=str(path), test_fraction=0.2))
    assert evaluation[0].startswith("line ") and calibration[0].endswith("\n")
    assert evaluation[0] + calibration[0] != "" and (calibration[0] + evaluation[0]) == path.read_text()
    assert 15 <= evaluation[0].count("\n") <= 21


def test_jsonl_rows_follow_their_split_column(tmp_path):
    path = tmp_path / "texts.jsonl"
    rows = [{"body": f"text {n}", "part": "val" if n % 3 == 0 else "train"} for n in range(9)]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    evaluation, calibration, _ = texts(spec(path=str(path), text_column="body", split_column="part"))
    assert evaluation == ["text 0", "text 3", "text 6"] and len(calibration) == 6


@pytest.mark.parametrize(
    "content, expected",
    [("", "holds no text"), ("  \n\n ", "holds no text"), ('{"txt": "a"}\n', "no text field 'text'")],
)
def test_empty_or_unreadable_text_is_refused_naming_the_file(tmp_path, content, expected):
    path = tmp_path / ("bad.jsonl" if content.startswith("{") else "bad.txt")
    path.write_text(content)
    with pytest.raises(DataError, match=expected):
        texts(spec(path=str(path)))


def test_prompts_never_repeat_even_after_the_text_runs_out():
    corpus = Corpus(np.arange(100, dtype=np.int64), np.arange(10, dtype=np.int64), "numbers")
    seen = {corpus.prompt(n, 16).tobytes() for n in range(40)}
    assert len(seen) == 40 and corpus.prompt(0, 16).shape == (1, 16)
    assert corpus.prompt(3, 8, batch_size=2).shape == (2, 8)
    with pytest.raises(DataError, match="fewer than a prompt"):
        corpus.prompt(0, 200)
    assert [w.shape for w in corpus.calibration_windows(5, 4)] == [(1, 4), (1, 4)]
    # As many as the text holds, every one distinct; one more is refused (a search draws from parts of that range).
    count = corpus.distinct_prompts(16)
    assert len({corpus.prompt(n, 16).tobytes() for n in range(count)}) == count == 85
    with pytest.raises(DataError, match=f"too short for {count + 1} distinct prompts"):
        corpus.prompt(count, 16)
    assert corpus.distinct_prompts(16, batch_size=2) == count // 2 and corpus.distinct_prompts(200) == 0


CHAT = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.fixture(scope="module")
def chat_llama(tmp_path_factory):
    from tests.models.tiny_lm import tiny_llama_folder

    return tiny_llama_folder(tmp_path_factory.mktemp("lm") / "chat-llama", context=64, layers=1, chat_template=CHAT)


def test_a_prompt_set_takes_plain_prompts_and_chat_messages_through_the_models_chat_template(chat_llama, tmp_path):
    from transformers import AutoTokenizer

    from greencompress.models.corpus import load_corpus

    tokenizer = AutoTokenizer.from_pretrained(chat_llama)
    prompts = tmp_path / "prompts.jsonl"
    messages = [{"role": "system", "content": "Speak verse."}, {"role": "user", "content": "Who art thou?"}]
    prompts.write_text(json.dumps({"prompt": "Fair is foul"}) + "\n\n" + json.dumps({"messages": messages}) + "\n")
    corpus = load_corpus(spec(prompts=str(prompts)), tokenizer, 32, context=64)
    plain, chat = corpus.prompts_to_continue()
    assert plain.tolist() == [tokenizer("Fair is foul")["input_ids"]]
    assert tokenizer.decode(chat[0]) == "<system>Speak verse.\n<user>Who art thou?\n<assistant>"
    assert corpus.prompts_description == f"2 prompts of {prompts}, 1 rendered with the model's chat template"
    without = load_corpus(spec(), tokenizer, 32)  # no prompt set: windows from the end of the evaluation text
    assert [p.shape for p in without.prompts_to_continue()] == [(1, 64)] * 4
    assert np.array_equal(without.prompts_to_continue()[0][0], without.evaluation[-64:])


@pytest.mark.parametrize(
    "lines, expected",
    [
        ("", "holds no prompt"),
        ("{not json", ":1: not a JSON object"),
        ('{"prompt": ""}', ':1: expected {"prompt": "<text>"}'),
        ('{"messages": []}', ':1: expected {"prompt": "<text>"}'),
        ('{"prompt": "' + "Fair is foul, and foul is fair. " * 12 + '"}', "to generate need"),
    ],
)
def test_a_prompt_set_the_model_cannot_take_is_refused_naming_the_line(chat_llama, tmp_path, lines, expected):
    from transformers import AutoTokenizer

    from greencompress.models.corpus import load_prompts

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(lines)
    with pytest.raises(DataError, match="data.prompts: " + str(prompts)) as refused:
        load_prompts(prompts, AutoTokenizer.from_pretrained(chat_llama), context=64)
    assert expected in str(refused.value)
