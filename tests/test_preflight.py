"""`validate` (and every run, first) opens what a recipe points at: bad model folders, data files and settings, made
here from a real tiny BERT and a real CSV, each end in one error naming the file and field, before any work."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from greencompress.core.errors import GreencompressError
from greencompress.pipeline.prepare import preflight
from greencompress.pipeline.recipe import load_recipe
from tests.models.test_huggingface import small_rows, tiny_bert, write_csv
from tests.models.tiny_lm import tiny_llama_folder


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A text classifier's folder, an encoder's folder and a CSV that together validate."""
    root = tmp_path_factory.mktemp("preflight")
    return {
        "classifier": tiny_bert(root / "classifier"),
        "encoder": tiny_bert(root / "encoder", head=False),
        "csv": write_csv(root / "texts.csv", small_rows()),
        "llama": tiny_llama_folder(root / "llama"),
    }


def text_recipe(folder, csv_file, model: str = "", data: str = "", rest: str = "") -> str:
    return (
        f"name: t\nmodel: {{source: huggingface, path: {folder}, task: text-classification{model}}}\n"
        f"data: {{kind: text, path: {csv_file}, eval_split: test{data}}}\n"
        f"stages: [{{quantize: {{method: dynamic}}}}]\n"
        f"benchmark: {{runtimes: [onnxruntime], sequence_lengths: [32]}}\n{rest}"
    )


def broken_copy(folder, target, remove=(), config=None):
    shutil.copytree(folder, target)
    for name in remove:
        (target / name).unlink()
    if config is not None:
        (target / "config.json").write_text(config(json.loads((target / "config.json").read_text())))
    return target


def cases(good, tmp):
    """(recipe text, what the one error line must say) for each bad input."""
    folder, encoder, csv_file = good["classifier"], good["encoder"], good["csv"]
    made = {
        "no config": broken_copy(folder, tmp / "no-config", remove=("config.json",)),
        "bad json": broken_copy(folder, tmp / "bad-json", config=lambda c: "{not json"),
        "custom code": broken_copy(folder, tmp / "custom", config=lambda c: json.dumps({**c, "auto_map": {"x": "y"}})),
        "no tokenizer": broken_copy(folder, tmp / "no-tokenizer", remove=("vocab.txt", "tokenizer.json")),
        "no weights": broken_copy(folder, tmp / "no-weights", remove=("model.safetensors",)),
    }
    semicolons = tmp / "semicolons.csv"
    semicolons.write_text("sentence;label;split\na small boat;vehicle;train\n")
    header_only = tmp / "header.csv"
    header_only.write_text("text,label,split\n")
    unknown_label = write_csv(
        tmp / "unknown.csv", [*small_rows(), {"text": "a boat", "label": "boat", "split": "test"}]
    )
    misspelt = tmp / "misspelt.csv"
    misspelt.write_text(csv_file.read_text().replace("text,label,split", "text,label,spilt", 1))
    return [
        (text_recipe(made["no config"], csv_file), "has no config.json"),
        (text_recipe(made["bad json"], csv_file), "config.json: not valid JSON"),
        (text_recipe(made["custom code"], csv_file), "the config asks for custom code"),
        (text_recipe(made["no tokenizer"], csv_file), "has no tokenizer"),
        (text_recipe(made["no weights"], csv_file), "has no weights"),
        (text_recipe(folder / "model.safetensors", csv_file), "is a weights file; give the folder"),
        (text_recipe(encoder, csv_file), "has no sequence-classification head"),
        (text_recipe(folder, csv_file, data=", max_length: 1024"), "data.max_length: 1024 is above the model's"),
        (text_recipe(folder, csv_file).replace("[32]", "[1024]"), "benchmark.sequence_lengths: 1024 is above"),
        (text_recipe("model.zip", csv_file, model=", package: not_a_pkg"), "model.package: no installed package"),
        (text_recipe(folder, semicolons), "data.text_column: no column 'text'; columns there: sentence, label"),
        (text_recipe(folder, header_only), "header.csv: no rows"),
        (text_recipe(folder, csv_file, data=", eval_split: validation"), "data.eval_split: no rows with split"),
        (text_recipe(folder, misspelt), "data.split_column: no column 'split'; did you mean 'spilt'?"),
        (text_recipe(folder, unknown_label), "data.label_column: label(s) 'boat' are not in the model's head"),
        (text_recipe(folder, csv_file, rest="gates: {min_energy_saving: 0.3}\n"), "gates.min_energy_saving"),
        (
            "name: t\nmodel: {source: torchvision, name: resnet18, weights: IMAGENET}\ndata: {kind: digits}\n"
            "stages: [{quantize: {}}]\n",
            "model.weights: resnet18 has no weights 'IMAGENET'",
        ),
        (
            "name: t\nmodel: {source: callable, architecture: no_such_package.models:net, checkpoint: "
            f"{csv_file}}}\ndata: {{kind: digits}}\nstages: [{{quantize: {{}}}}]\n",
            "model.architecture: cannot import 'no_such_package.models'",
        ),
        *more_cases(good, tmp),
        *language_model_cases(good, tmp),
    ]


def lm_recipe(folder, data: str = "", stages: str = "[]", rest: str = "") -> str:
    return (
        f"name: t\nmodel: {{source: huggingface, task: text-generation, path: {folder}}}\n"
        f"data: {{kind: text{data}}}\nstages: {stages}\n"
        f"benchmark: {{batch_sizes: [1], sequence_lengths: [32], runtimes: []}}\n{rest}"
    )


def language_model_cases(good, tmp):
    """A causal LM's own mistakes: what it is, its text, its prompts, and techniques or runtimes of other tasks."""
    import gguf
    import numpy as np

    llama, encoder = good["llama"], good["encoder"]
    odd = gguf.GGUFWriter(str(tmp / "odd.gguf"), "rwkv9")  # an architecture transformers cannot dequantize
    odd.add_block_count(1)
    odd.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
    odd.write_header_to_file()
    odd.write_kv_data_to_file()
    odd.write_tensors_to_file()
    odd.close()
    empty = tmp / "empty.txt"
    empty.write_text("\n\n")
    short = tmp / "short.txt"
    short.write_text("Fair is foul, and foul is fair.\n" * 6)
    chat = tmp / "chat.jsonl"  # chat messages, and the tiny Llama has no chat template
    chat.write_text('{"prompt": "Fair is foul"}\n{"messages": [{"role": "user", "content": "Who art thou?"}]}\n')
    no_prompts = tmp / "no_prompts.jsonl"
    no_prompts.write_text('{"text": "Fair is foul"}\n')
    return [
        (lm_recipe(encoder), "text-generation needs a causal language model"),
        (lm_recipe(tmp / "odd.gguf"), "cannot read this GGUF file: GGUF model with architecture rwkv9"),
        (lm_recipe(llama).replace("[32]", "[512]"), "a prompt of 512 tokens and benchmark.new_tokens 64 need 576"),
        # the prompt fits, its new tokens do not
        (lm_recipe(llama).replace("[32]", "[480]"), "a prompt of 480 tokens and benchmark.new_tokens 64 need 544"),
        (lm_recipe(llama, data=f", path: {empty}"), "holds no text"),
        (lm_recipe(llama, data=f", path: {short}"), "shorter than one perplexity window of 256"),
        (lm_recipe(llama, data=f", prompts: {chat}"), f"data.prompts: {chat}:2: chat messages need the model's chat"),
        (lm_recipe(llama, data=f", prompts: {no_prompts}"), '1: expected {"prompt": "<text>"} or {"messages"'),
        (lm_recipe(llama, stages="[{quantize: {}}]"), "acts on a CNN or a transformer encoder"),
        (
            lm_recipe(llama, stages="[{prune: {method: unstructured}}]"),
            "prune.method: a causal LM's pruning removes FFN neurons",
        ),
        (lm_recipe(llama, stages="[{prune: {ffn: 0.2, target_macs: 0.5}}]"), "prune.target_macs: not for a transf"),
        (
            lm_recipe(llama, stages="[{weight_only: {symmetric: true, zero_point: float}}]"),
            "zero_point: float is for an asymmetric grid",
        ),
        (
            image_recipe("source: torchvision, name: resnet18").replace("quantize: {}", "weight_only: {}"),
            "acts on a causal",
        ),
        (
            image_recipe("source: torchvision, name: resnet18", rest="benchmark: {runtimes: [onnxruntime-genai]}\n"),
            "onnxruntime-genai generates text",
        ),
        (
            image_recipe("source: torchvision, name: resnet18", rest="gates: {max_perplexity_increase: 5}\n"),
            "judges a language model",
        ),
        (image_recipe("source: torchvision, name: resnet18", f"kind: digits, prompts: {chat}"), "a prompt set is for"),
    ]


def image_recipe(model: str, data: str = "kind: digits", rest: str = "") -> str:
    return f"name: t\nmodel: {{{model}}}\ndata: {{{data}}}\nstages: [{{quantize: {{}}}}]\n{rest}"


def more_cases(good, tmp):
    """The ecosystem's words, recipe keys and files people have: each one mistake, each one line."""
    folder, csv_file = good["classifier"], good["csv"]
    latin = tmp / "latin1.csv"
    latin.write_bytes("text,label,split\ncaf\xe9 au lait,food,test\n".encode("latin-1"))
    broken_jsonl = tmp / "texts.jsonl"
    broken_jsonl.write_text('{"text": "a boat", "label": "vehicle", "split": "test"}\n{"text": \n')
    no_label = write_csv(tmp / "nolabel.csv", small_rows(), columns=("text", "split"))
    empty_classes = tmp / "images"
    (empty_classes / "test").mkdir(parents=True)
    (empty_classes / "train" / "cat").mkdir(parents=True)
    empty = tmp / "empty.yaml.txt"
    empty.write_text("")
    resnet = "source: torchvision, name: resnet18"
    return [
        ("", "is empty"),
        ("name: t\nmodel: [unclosed\n", "not valid YAML at line 3, column 1: expected ',' or ']'"),
        (text_recipe(folder, csv_file).replace("[onnxruntime]", "[onnx]"), "did you mean 'onnxruntime'"),
        (text_recipe(folder, csv_file).replace("text-classification", "text-clasification"), "text-classification"),
        (text_recipe(folder, csv_file).replace("kind: text", "kind: txt"), "did you mean 'text'?"),
        (text_recipe("sentence-transformers/all-MiniLM-L6-v2", csv_file), "reads local folders"),
        (text_recipe(folder, csv_file, rest="energy: {region: Atlantis}\n"), "energy.region"),
        (text_recipe(folder, tmp / "missing.csv"), "data.path: file or folder not found"),
        (text_recipe(folder, csv_file).replace("quantize:", "quantise:"), "did you mean 'quantize'?"),
        (text_recipe(folder, csv_file).replace("method: dynamic", "methd: dynamic"), "did you mean 'method'?"),
        (text_recipe(folder, csv_file, data=", text_column: txt"), "data.text_column: no column 'txt'"),
        (text_recipe(folder, no_label), "data.label_column: no column 'label'"),
        (text_recipe(folder, latin), "latin1.csv"),
        (text_recipe(folder, broken_jsonl), "texts.jsonl"),
        (text_recipe(folder, csv_file, data=", delimiter: ';'"), "data.text_column: no column 'text'"),
        (text_recipe(folder, csv_file, rest="gates: {min_embedding_cosine: 0.9}\n"), "gates.min_embedding_cosine"),
        (text_recipe(folder, csv_file, data=", batch_size: 0"), "data.batch_size"),
        (text_recipe(folder, csv_file).replace("[32]", "[0]"), "benchmark.sequence_lengths"),
        (image_recipe("source: torchvision, name: resnet19"), "did you mean 'resnet18'"),
        (image_recipe(f"{resnet}, num_classes: 1"), "model.num_classes"),
        (image_recipe(resnet, "kind: text"), "data.kind: image-classification models are fed data of kind"),
        (image_recipe(resnet, f"kind: imagefolder, root: {empty_classes}, eval_split: test"), "data.eval_split"),
        (image_recipe(resnet, f"kind: imagefolder, root: {tmp / 'nowhere'}"), "data.root: folder not found"),
        (image_recipe(resnet, rest="benchmark: {device: cuda}\n"), "no GPU here"),
        (image_recipe(f"{resnet}, task: text-classification"), "model.task text-classification"),
        (image_recipe("source: checkpoint, name: resnet18, checkpoint: " + str(csv_file)), "needs field num_classes"),
    ]


def test_every_bad_input_is_one_error_naming_the_file_and_field_before_any_work(good, tmp_path, write_recipe):
    corpus = cases(good, tmp_path)
    assert len(corpus) >= 40
    for number, (text, expected) in enumerate(corpus):
        path = write_recipe(text, f"case{number}.yaml")
        with pytest.raises(GreencompressError) as caught:
            preflight(load_recipe(path))
        assert expected in str(caught.value), (number, str(caught.value))
        assert caught.value.exit_code == 2


def test_the_good_inputs_pass(good, write_recipe):
    preflight(load_recipe(write_recipe(text_recipe(good["classifier"], good["csv"]))))


@pytest.mark.slow
def test_validate_and_run_say_one_line_and_write_nothing(good, tmp_path, write_recipe):
    for number, (text, expected) in enumerate(cases(good, tmp_path)[:4:3]):  # a folder without config or tokenizer
        path = write_recipe(text, f"cli{number}.yaml")
        for command in (["validate", str(path)], ["run", str(path), "--output", str(tmp_path / "runs")]):
            result = subprocess.run(
                [sys.executable, "-m", "greencompress", *command],
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=300,
            )
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
            assert len(lines) == 1 and expected in lines[0], lines
        assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_every_case_through_validate_and_run_exits_2_with_one_line_and_writes_nothing(
    good, tmp_path, write_recipe, capsys, monkeypatch
):
    """The whole corpus through the command line's own entry point (in this process: one interpreter start, not 80)."""
    from greencompress.cli import main

    runs = tmp_path / "runs"
    for number, (text, expected) in enumerate(cases(good, tmp_path)):
        path = write_recipe(text, f"each{number}.yaml")
        for command in (["validate", str(path)], ["run", str(path), "--output", str(runs)]):
            monkeypatch.setattr(sys, "argv", ["greencompress", *command])
            with pytest.raises(SystemExit) as exited:
                main()
            error = capsys.readouterr().err
            lines = [line for line in error.splitlines() if line.strip()]
            assert exited.value.code == 2 and "Traceback" not in error, (number, command[0], error[-2000:])
            assert len(lines) == 1 and expected in lines[0] and lines[0].startswith("error:"), (number, lines)
    assert not runs.exists()
