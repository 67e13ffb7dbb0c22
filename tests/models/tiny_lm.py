"""A tiny Llama folder made in the test: a byte-level BPE tokenizer trained on the shipped Shakespeare, a random
4-head model with 2 key/value heads (grouped-query attention, as SmolLM2), both saved as `from_pretrained` reads."""

from __future__ import annotations

from pathlib import Path

from greencompress.models.corpus import texts
from greencompress.models.data import DataSpec


def tiny_llama_folder(folder: Path, context: int = 512, layers: int = 2, chat_template: str | None = None) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    evaluation, calibration, _ = texts(DataSpec(kind="text"))  # the shipped plays
    bpe.train_from_iterator(evaluation + calibration, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    tokenizer.chat_template = chat_template
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = LlamaForCausalLM(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_gpt2_folder(folder: Path, context: int = 512) -> Path:
    """A random 2-layer GPT-2 (Conv1D layers, learned positions) with the same kind of tokenizer."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    llama = tiny_llama_folder(folder.with_name(folder.name + "-tokenizer"), context, layers=1)
    tokenizer = AutoTokenizer.from_pretrained(llama)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=context)
    GPT2LMHeadModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
