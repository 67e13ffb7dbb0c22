"""The package's layering, read from its imports: each folder is a layer, imports only point down, no cycles.

Every import counts: at module level, inside functions, and under `if TYPE_CHECKING:`. A deferred
import may avoid loading a heavy library at start-up; it never makes a circle acceptable. The order
below is the one docs/architecture.md draws.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "greencompress"
# Bottom to top. A layer is a package (or, at the top, the few modules directly in greencompress/).
LAYERS = (
    ("core", {"core"}),
    ("models", {"models", "resources"}),
    ("runtimes", {"runtimes"}),
    ("measure", {"measure"}),
    ("compress", {"compress"}),
    ("report", {"report"}),
    ("pipeline", {"pipeline"}),
    ("search", {"search"}),
    ("entry points", {"", "__main__", "cli", "bench", "energy"}),
)
TOP_LEVEL_MODULE_LIMIT = 8  # modules directly in greencompress/, besides __init__.py and __main__.py


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def _known(name: str) -> str:
    """The module `name` refers to: itself, or the nearest package above it (a name imported from a package)."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports(path: Path) -> set[str]:
    """Every greencompress module `path` imports, wherever the import statement stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {_known(alias.name) for alias in node.names if alias.name.startswith("greencompress")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("greencompress"):
            for alias in node.names:  # `from greencompress.compress import distributed` imports a module
                found.add(_known(f"{node.module}.{alias.name}"))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value in MODULES
        ):
            found.add(node.args[0].value)  # importlib.import_module("greencompress.energy")
    return found - {module_name(path)}


GRAPH = {name: imports(path) for name, path in MODULES.items()}


def unit(module: str) -> str:
    """The package a module belongs to directly under greencompress/, or its own name for a top-level module."""
    parts = module.split(".")[1:]
    return parts[0] if parts else ""


def rank(module: str) -> int:
    return next(index for index, (_, units) in enumerate(LAYERS) if unit(module) in units)


def cycles(graph: dict[str, set[str]]) -> list[str]:
    found, done = [], set()

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            found.append(" -> ".join(stack[stack.index(node) :] + [node]))
            return
        if node in done:
            return
        for target in sorted(graph.get(node, ())):
            visit(target, stack + [node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    return found


def test_every_module_belongs_to_a_layer():
    assert [module for module in MODULES if not any(unit(module) in units for _, units in LAYERS)] == []


def test_imports_only_point_down():
    upward = [
        f"{module} ({LAYERS[rank(module)][0]}) imports {target} ({LAYERS[rank(target)][0]})"
        for module, targets in GRAPH.items()
        for target in targets
        if rank(target) > rank(module)
    ]
    assert upward == []


def test_layers_of_one_rank_do_not_import_each_other():
    sideways = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if rank(target) == rank(module) and unit(target) != unit(module) and rank(module) < len(LAYERS) - 1
    ]
    assert sideways == []


def test_no_import_cycle_between_modules_counting_deferred_and_type_checking_imports():
    assert cycles(GRAPH) == []


def test_no_import_cycle_between_packages():
    packages: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        packages.setdefault(unit(module), set()).update(unit(t) for t in targets if unit(t) != unit(module))
    assert cycles(packages) == []


def test_the_top_level_stays_small():
    top = [path.name for path in PACKAGE.glob("*.py") if path.name not in ("__init__.py", "__main__.py")]
    assert len(top) <= TOP_LEVEL_MODULE_LIMIT, top


def test_architecture_doc_draws_the_same_layers():
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    picture = doc.split("```")[1]  # the diagram, top layer first
    positions = [picture.find(f" {name}/ ") for name, _ in LAYERS[:-1]]
    assert -1 not in positions, [name for (name, _), at in zip(LAYERS, positions) if at == -1]
    assert positions == sorted(positions, reverse=True), "the diagram draws the layers top to bottom"
    table = doc[doc.index("| layer |") :]
    rows = [table.find(f"| `{name}/` |") for name, _ in LAYERS[:-1]]
    assert -1 not in rows and rows == sorted(rows), "the table lists the layers bottom to top"


def test_nothing_below_the_pipeline_reads_the_recipe():
    offenders = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if target == "greencompress.pipeline.recipe" and rank(module) < rank(target)
    ]
    assert offenders == []


def test_importing_greencompress_loads_neither_the_recipe_nor_torch():
    import subprocess
    import sys

    probe = (
        "import sys, greencompress; print(sorted(m for m in ('greencompress.pipeline', 'torch', 'pydantic') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
