"""What the seams promise, read from the source: only a task knows what kind of model it holds, and no object gains
an attribute after its constructor."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "greencompress"
# The task modules, and the loaders they call (a Hugging Face folder is loaded for each of the three tasks).
KNOWS_THE_KIND = ("models/tasks/", "models/huggingface.py", "models/sources.py")
# Tests of what kind of model this is: a flag, a preprocessing or tokenizer that only some kinds have, a shim for
# callers that passed an image shape, the source or the task by name.
KIND_TESTS = {
    "an encoder flag": re.compile(r"\.encoder\b(?!_)"),
    "an image processor's presence": re.compile(r"image_preprocessing"),
    "a tokenizer's presence": re.compile(r"tokenizer is (not )?None"),
    "the image-shape shim": re.compile(r"as_model_inputs"),
    "the source by name": re.compile(r"source [!=]= \"huggingface\""),
    "the task by name": re.compile(r"task [!=]= \"|task in \("),
}


def test_outside_the_task_modules_no_code_asks_what_kind_of_model_it_holds():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).as_posix()
        if where.startswith(KNOWS_THE_KIND):
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0]
            found += [
                f"{where}:{number}: {what}: {line.strip()}"
                for what, pattern in KIND_TESTS.items()
                if pattern.search(code)
            ]
    assert not found, "ask the task (models/tasks/) instead:\n" + "\n".join(found)


def test_the_kind_tests_would_be_found():
    """The patterns above catch the branches this test exists to keep out."""
    samples = [
        "if context.inputs.encoder:",
        "if loaded.image_preprocessing is not None:",
        "if tokenizer is None:",
        "inputs = as_model_inputs(shape)",
        'if spec.source == "huggingface":',
        'if recipe.model.task == "sentence-embedding":',
    ]
    assert all(any(pattern.search(sample) for pattern in KIND_TESTS.values()) for sample in samples)


def _declared(cls: ast.ClassDef) -> set[str]:
    """Attributes a class declares: class-level names, and what its __init__ assigns or registers as a buffer."""
    names = set()
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names |= {target.id for item in node.targets for target in ast.walk(item) if isinstance(target, ast.Name)}
        elif isinstance(node, ast.FunctionDef) and node.name == "__init__":
            for inner in ast.walk(node):
                if isinstance(inner, ast.Attribute) and isinstance(inner.ctx, ast.Store) and _on_self(inner):
                    names.add(inner.attr)
                elif (
                    isinstance(inner, ast.Call)
                    and getattr(inner.func, "attr", "") == "register_buffer"
                    and inner.args
                    and isinstance(inner.args[0], ast.Constant)
                ):
                    names.add(inner.args[0].value)
    return names


def _on_self(node: ast.Attribute) -> bool:
    return isinstance(node.value, ast.Name) and node.value.id == "self"


def test_no_attribute_is_first_created_outside_a_constructor():
    late = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for cls in [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ClassDef)]:
            declared = _declared(cls)
            for method in [node for node in cls.body if isinstance(node, ast.FunctionDef) and node.name != "__init__"]:
                late += [
                    f"{path.relative_to(PACKAGE)}:{node.lineno} {cls.name}.{node.attr} (in {method.name})"
                    for node in ast.walk(method)
                    if isinstance(node, ast.Attribute)
                    and isinstance(node.ctx, ast.Store)
                    and _on_self(node)
                    and node.attr not in declared
                ]
    assert not late, "declare these in __init__:\n" + "\n".join(late)
