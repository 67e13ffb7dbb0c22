"""Text for a language model: evaluation and calibration token ids, and prompts drawn from them.

A corpus comes from `data.path` (a plain-text file, a folder of them, or JSONL with a `text_column`) or, without a
path, from the shipped Shakespeare plays (resources/shakespeare.jsonl: Macbeth and Twelfth Night evaluate, The
Tempest and Julius Caesar calibrate). JSONL rows whose `split_column` is `eval_split` evaluate and those of
`calibration_split` calibrate; text without splits is cut once, its last `test_fraction` evaluating. Calibration
never sees the evaluation text: perplexity is judged on tokens no data-aware method looked at.

Continuations are compared on a prompt set: `data.prompts` (JSONL of plain prompts, or chat messages rendered with
the model's own chat template), or prompts cut from the end of the evaluation text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np

from greencompress.core.errors import DataError

SHIPPED = "shakespeare.jsonl"


# Prompts cut from the evaluation text when no prompt set is given: how many, and how long; tokens compared.
TEXT_PROMPTS, TEXT_PROMPT_TOKENS = 4, 64
CONTINUATION_TOKENS = 16


@dataclass(frozen=True)
class Corpus:
    """Token ids of the evaluation and calibration text, the prompts continuations are compared on, and where they
    all came from."""

    evaluation: np.ndarray  # int64 [tokens]
    calibration: np.ndarray
    description: str
    continuation_prompts: tuple[np.ndarray, ...] = ()  # each [1, tokens]; empty: cut from the evaluation text
    prompts_description: str = (
        f"{TEXT_PROMPTS} prompts of {TEXT_PROMPT_TOKENS} tokens from the end of the evaluation text"
    )

    def prompts_to_continue(self) -> list[np.ndarray]:
        """The prompt set, or TEXT_PROMPTS windows from the end of the evaluation text (prompts of the timed
        benchmark start at its beginning)."""
        if self.continuation_prompts:
            return list(self.continuation_prompts)
        end = len(self.evaluation)
        starts = [end - (index + 1) * TEXT_PROMPT_TOKENS for index in range(TEXT_PROMPTS)]
        return [self.evaluation[None, start : start + TEXT_PROMPT_TOKENS] for start in starts if start >= 0]

    def calibration_windows(self, count: int, length: int) -> list[np.ndarray]:
        """Up to `count` consecutive, disjoint windows of `length` calibration tokens, each [1, length]."""
        starts = range(0, max(len(self.calibration) - length, 0) + 1, length)
        return [self.calibration[None, start : start + length] for start in list(starts)[:count]]

    def prompt(self, index: int, tokens: int, batch_size: int = 1) -> np.ndarray:
        """The `index`-th prompt set, [batch_size, tokens] of evaluation text: consecutive windows, then (once they
        run out) the same windows shifted by one token per pass, so that no two prompts are ever the same."""
        room = len(self.evaluation) - tokens
        if room < 0:
            raise DataError(
                f"data: the evaluation text has {len(self.evaluation)} tokens, fewer than a prompt's {tokens}"
            )
        rows = [self.evaluation[start : start + tokens] for start in self._starts(index, tokens, batch_size, room)]
        return np.stack(rows)

    def distinct_prompts(self, tokens: int, batch_size: int = 1) -> int:
        """How many prompt sets `prompt` can give at this length and batch size before the text runs out."""
        room = len(self.evaluation) - tokens
        windows = sum((room - shift) // tokens + 1 for shift in range(min(tokens - 1, room) + 1)) if room >= 0 else 0
        return windows // batch_size

    @staticmethod
    def _starts(index: int, tokens: int, batch_size: int, room: int) -> list[int]:
        starts = []
        for n in range(index * batch_size, (index + 1) * batch_size):
            left, shift = n, 0
            while shift < tokens and shift <= room:  # pass `shift`: windows at shift, shift + tokens, ...
                count = (room - shift) // tokens + 1
                if left < count:
                    starts.append(left * tokens + shift)
                    break
                left, shift = left - count, shift + 1
            else:
                raise DataError(
                    f"data: the evaluation text is too short for {n + 1} distinct prompts of {tokens} tokens"
                )
        return starts


def texts(data, field: str = "data.path") -> tuple[list[str], list[str], str]:
    """(evaluation texts, calibration texts, description) of a DataSpec's text for a language model."""
    if data.path is None:
        lines = resources.files("greencompress.resources").joinpath(SHIPPED).read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines]
        plays = lambda split: sorted({r["play"] for r in records if r["split"] == split})  # noqa: E731
        return (
            [r["text"] for r in records if r["split"] == "test"],
            [r["text"] for r in records if r["split"] == "train"],
            f"Shakespeare (shipped, public domain): evaluation {', '.join(plays('test'))}; "
            f"calibration {', '.join(plays('train'))}",
        )
    path = Path(data.path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"{field}: {path} holds no .txt file")
        return _cut([_read(p, field) for p in files], data.test_fraction, f"{len(files)} text files in {path}")
    if path.suffix.lower() in (".jsonl", ".json"):
        return _jsonl(path, data, field)
    return _cut([_read(path, field)], data.test_fraction, str(path))


def load_corpus(data, tokenizer, window: int, context: int | None = None) -> Corpus:
    """The DataSpec's text tokenised, and its prompt set; DataError (naming the file and field) for text too short
    to judge a model, or a prompt set the model cannot take (`context`: its positions)."""
    evaluation, calibration, description = texts(data)
    ids = lambda parts: np.asarray(  # noqa: E731
        [t for part in parts for t in tokenizer(part)["input_ids"]], dtype=np.int64
    )
    corpus = Corpus(ids(evaluation), ids(calibration), description)
    if data.prompts is not None:
        prompts, how = load_prompts(data.prompts, tokenizer, context)
        corpus = replace(corpus, continuation_prompts=prompts, prompts_description=how)
    where = data.path or SHIPPED
    if len(corpus.evaluation) <= window:
        raise DataError(
            f"data.path: {where}: the evaluation text is {len(corpus.evaluation)} tokens, shorter than one perplexity "
            f"window of {window} (+1): give more text"
        )
    if len(corpus.calibration) == 0:
        raise DataError(f"data.path: {where}: no calibration text (rows of split {data.calibration_split!r})")
    return corpus


def load_prompts(
    path: Path, tokenizer, context: int | None = None, new_tokens: int = CONTINUATION_TOKENS
) -> tuple[tuple[np.ndarray, ...], str]:
    """A JSONL prompt set tokenised: {"prompt": text} as it is, {"messages": [...]} through the tokenizer's chat
    template with the assistant's turn opened. Returns the prompts ([1, tokens] each) and a description."""
    prompts, chats = [], 0
    for number, row in _json_lines(path, "data.prompts", f"data.prompts: {path}"):
        if isinstance(row, dict) and isinstance(row.get("prompt"), str) and row["prompt"].strip():
            ids = tokenizer(row["prompt"])["input_ids"]
        elif isinstance(row, dict) and _is_chat(row.get("messages")):
            if not getattr(tokenizer, "chat_template", None):
                raise DataError(
                    f"data.prompts: {path}:{number}: chat messages need the model's chat template, and its tokenizer "
                    "has none (chat_template.jinja, or chat_template in tokenizer_config.json): give plain "
                    '{"prompt": ...} lines, or a model that has one'
                )
            ids = _token_ids(tokenizer.apply_chat_template(row["messages"], add_generation_prompt=True, tokenize=True))
            chats += 1
        else:
            raise DataError(
                f'data.prompts: {path}:{number}: expected {{"prompt": "<text>"}} or {{"messages": [{{"role": ..., '
                '"content": ...}, ...]}'
            )
        if context is not None and len(ids) + new_tokens > context:
            raise DataError(
                f"data.prompts: {path}:{number}: {len(ids)} tokens and {new_tokens} to generate need "
                f"{len(ids) + new_tokens} positions; the model's context is {context}"
            )
        prompts.append(np.asarray(ids, dtype=np.int64)[None])
    if not prompts:
        raise DataError(f"data.prompts: {path} holds no prompt")
    rendered = f", {chats} rendered with the model's chat template" if chats else ""
    return tuple(prompts), f"{len(prompts)} prompts of {path}{rendered}"


def _is_chat(messages) -> bool:
    return (
        isinstance(messages, list)
        and bool(messages)
        and all(isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m for m in messages)
    )


def _token_ids(rendered) -> list[int]:
    """apply_chat_template's ids: a list, or (transformers 5) a mapping holding input_ids."""
    ids = rendered["input_ids"] if hasattr(rendered, "keys") else rendered
    return [int(t) for t in (ids[0] if ids and isinstance(ids[0], list) else ids)]


def _json_lines(path: Path, field: str, where: str):
    """(line number, parsed value) of each non-blank line of a JSONL file; DataError naming `where` and the line."""
    for number, line in enumerate(_read(path, field).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except ValueError as error:
            raise DataError(f"{where}:{number}: not a JSON object: {error}") from None


def _read(path: Path, field: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{field}: {path} is not UTF-8 text: {error}") from None


def _cut(parts: list[str], fraction: float, description: str) -> tuple[list[str], list[str], str]:
    """The text's last `fraction` (by characters, at a line break where there is one) evaluates, the rest calibrates."""
    text = "\n\n".join(part for part in parts if part.strip())
    if not text.strip():
        raise DataError(f"data.path: {description} holds no text")
    cut = int(len(text) * (1 - fraction))
    cut = text.rfind("\n", 0, cut) + 1 or cut
    return [text[cut:]], [text[:cut]], f"{description} (last {fraction:.0%} evaluates, the rest calibrates)"


def _jsonl(path: Path, data, field: str) -> tuple[list[str], list[str], str]:
    rows = []
    for number, row in _json_lines(path, field, str(path)):
        if not isinstance(row, dict) or not isinstance(row.get(data.text_column), str):
            raise DataError(f"{path}:{number}: no text field {data.text_column!r} (data.text_column)")
        rows.append(row)
    if not rows:
        raise DataError(f"data.path: {path} holds no text")
    if not any(data.split_column in row for row in rows):
        return _cut([row[data.text_column] for row in rows], data.test_fraction, str(path))
    evaluation = [row[data.text_column] for row in rows if row.get(data.split_column) == data.eval_split]
    calibration = [row[data.text_column] for row in rows if row.get(data.split_column) == data.calibration_split]
    if not evaluation:
        raise DataError(f"{path}: no row of split {data.eval_split!r} (data.eval_split, column {data.split_column!r})")
    return (
        evaluation,
        calibration,
        f"{path} (split {data.eval_split!r} evaluates, {data.calibration_split!r} calibrates)",
    )
