"""The package's layering, read from its imports: no cycles, and nothing below the pipeline imports the recipe."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "greencompress"
# Modules that do the work the recipe describes: they own their config sections and never read the whole recipe.
BELOW_THE_PIPELINE = ("compress/", "measure/", "data.py", "models.py", "export.py")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, module_level_only: bool) -> set[str]:
    """The greencompress modules `path` imports (the module itself, or the package a name comes from)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("greencompress")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("greencompress"):
            for alias in node.names:  # `from greencompress import energy` imports a module
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists()
                          or (PACKAGE.parent / candidate.replace(".", "/") / "__init__.py").exists() else node.module)
    return found


def test_no_module_below_the_pipeline_imports_the_recipe_or_the_pipeline():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(BELOW_THE_PIPELINE) or relative in BELOW_THE_PIPELINE:
            for imported in imports(path, module_level_only=False):  # lazy imports inside functions count too
                if imported in ("greencompress.recipe", "greencompress.pipeline"):
                    offenders.append(f"{relative} imports {imported}")
    assert offenders == []


def test_no_import_cycles_at_module_level():
    graph = {module_name(path): imports(path, module_level_only=True) for path in PACKAGE.rglob("*.py")}
    cycles = []

    def visit(module: str, stack: list[str]) -> None:
        if module in stack:
            cycles.append(" -> ".join(stack[stack.index(module):] + [module]))
            return
        if module in done:
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, stack + [module])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        visit(module, [])
    assert cycles == []


def test_importing_greencompress_loads_neither_the_recipe_nor_torch():
    import subprocess
    import sys

    probe = ("import sys, greencompress; print(sorted(m for m in ('greencompress.recipe', 'torch', 'pydantic') "
             "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
