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


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A text classifier's folder, an encoder's folder and a CSV that together validate."""
    root = tmp_path_factory.mktemp("preflight")
    return {
        "classifier": tiny_bert(root / "classifier"),
        "encoder": tiny_bert(root / "encoder", head=False),
        "csv": write_csv(root / "texts.csv", small_rows()),
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
    ]


def test_every_bad_input_is_one_error_naming_the_file_and_field_before_any_work(good, tmp_path, write_recipe):
    for number, (text, expected) in enumerate(cases(good, tmp_path)):
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
