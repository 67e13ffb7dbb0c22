"""The README's claims that a test can check: its commands, options, files, links and recipe keys exist."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import click
import yaml

from greencompress.cli import cli
from greencompress.compress.technique import TECHNIQUES
from greencompress.pipeline.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    """The code blocks fenced as `language` ("" for plain ones), in order."""
    found, current, fenced_as = [], None, None
    for line in README.splitlines():
        if line.startswith("```"):
            if current is None:
                current, fenced_as = [], line[3:].strip()
            else:
                if fenced_as == language:
                    found.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return found


def test_it_starts_with_the_two_commands_of_a_fresh_machine_and_stays_short():
    first = blocks("")[0].splitlines()
    assert README.startswith("```\n") and len(first) == 2
    assert "pip install -e '.[dev]'" in first[0] and "greencompress run recipes/resnet_int8.yaml" in first[0]
    assert first[1] == ".venv/bin/pytest"
    assert len(README.splitlines()) <= 250


def commands() -> list[list[str]]:
    """Every `greencompress ...` invocation in a code block or in inline code, as words (comments dropped)."""
    lines = [line for block in blocks("") for line in block.splitlines()]
    lines += re.findall(r"`(greencompress [^`]+)`", README)
    found = []
    for line in lines:
        line = line.split("#")[0].strip().removeprefix("$ ").removeprefix(".venv/bin/")
        if "greencompress " in line and not line.startswith(("python", "pip")):
            found.append(shlex.split(line[line.index("greencompress ") :].replace("|", " ")))
    return found


def test_every_command_and_option_it_shows_exists():
    shown = commands()
    assert len(shown) >= 10
    for words in shown:
        command = cli
        rest = words[1:]
        while isinstance(command, click.Group) and rest and rest[0] in command.commands:
            command, rest = command.commands[rest[0]], rest[1:]
        assert command is not cli, words
        options = {option for parameter in command.params for option in getattr(parameter, "opts", [])}
        for word in rest:
            if word.startswith("--"):
                assert word.split("=")[0] in options, (words, word)


def test_every_file_and_link_it_names_exists():
    paths = set(re.findall(r"\]\(([^)#]+)\)", README))  # markdown links
    paths |= set(re.findall(r"\b((?:recipes|docs|scripts)/[\w./-]+\.(?:yaml|md|py|sh|png))", README))
    assert {"recipes/templates/text_own.yaml", "recipes/templates/checkpoint_own.yaml"} <= paths
    for path in paths:
        if not path.startswith("http"):
            assert (ROOT / path).exists(), path


def test_its_recipe_uses_keys_greencompress_knows_and_its_python_parses():
    (recipe,) = blocks("yaml")
    data = yaml.safe_load(recipe)

    def known(section: dict, model, where: str) -> None:
        for key, value in section.items():
            assert key in model.model_fields, f"{where}{key}"
            inner = model.model_fields[key].annotation
            if isinstance(value, dict) and isinstance(inner, type) and hasattr(inner, "model_fields"):
                known(value, inner, f"{where}{key}.")

    known({key: value for key, value in data.items() if key != "stages"}, Recipe, "")
    for stage in data["stages"]:
        ((name, settings),) = stage.items()
        technique = TECHNIQUES.get(name)
        schemes = technique.schemes or (technique.config,)
        assert any(set(settings) <= set(scheme.model_fields) for scheme in schemes), (name, settings)
    for code in blocks("python"):
        ast.parse(code)
