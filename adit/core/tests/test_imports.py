"""The module structure: every module imports on its own, and `adit.core` has no import cycle.

Isolation. Each module of `adit` (tests and migrations aside) is imported first, alone, in a
process that has imported nothing of ADIT before: a child forked from an interpreter that
holds only third-party packages. A module that needs Django's app registry (it imports
models) raises `AppRegistryNotReady` there, as any Django module would; it is imported again,
alone, in a child of a fresh interpreter that ran only `django.setup()`. Any other error, in
either round, fails the test with the module's traceback. Forking keeps this at a few seconds
of CPU instead of a fresh interpreter start per module.

Acyclic. The import graph of `adit.core` (every `import` and `from … import` statement,
module-level or inside functions, but not under `if TYPE_CHECKING:`) has no cycle. Lazy
imports count: an import inside a function that closes a circle is still a circle.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[3]
ADIT_DIR = PROJECT_DIR / "adit"

RUNNER = r"""
import importlib, json, os, sys, traceback

modules, setup = json.loads(sys.argv[1]), sys.argv[2] == "setup"
# Third-party packages first (shared by every child; none of them imports ADIT).
for name in ("django", "django.db.models", "pydicom", "pynetdicom", "numpy", "requests",
             "procrastinate", "rest_framework", "channels", "openpyxl"):
    importlib.import_module(name)
if setup:
    import django
    django.setup()
already = {name for name in sys.modules if name == "adit" or name.startswith("adit.")}
results = {}
for module in modules:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(module)
            outcome = "ok"
        except Exception as error:
            from django.core.exceptions import AppRegistryNotReady
            outcome = "registry" if isinstance(error, AppRegistryNotReady) and not setup else (
                "error: " + traceback.format_exc())
        os.write(write, outcome.encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    results[module] = b"".join(chunks).decode() or "error: the child died"
print(json.dumps({"results": results, "before": sorted(already)}))
"""


def adit_modules() -> list[str]:
    names = []
    for path in sorted(ADIT_DIR.rglob("*.py")):
        parts = path.relative_to(PROJECT_DIR).with_suffix("").parts
        if "tests" in parts or "migrations" in parts or "static" in parts:
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def run_isolated(modules: list[str], setup: bool, tmp_path: Path) -> dict:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "adit.settings.test",
        # Set so that no settings module generates secrets or starts a database.
        "DJANGO_SECRET_KEY": "test-only-secret-key",
        "TOKEN_AUTHENTICATION_SALT": "test-only-token-salt",
        "PSEUDONYM_SALT": "test-only-pseudonym-salt",
        "FILE_TRANSMIT_SECRET": "test-only-file-transmit-secret",
        "DATABASE_URL": os.environ.get("DATABASE_URL") or "postgres://nobody@127.0.0.1/none",
        "ADIT_DATA_DIR": str(tmp_path / "data"),
    }
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(modules), "setup" if setup else "bare"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_module_of_adit_imports_alone(tmp_path):
    modules = adit_modules()
    assert "adit.core.models" in modules and "adit.core.dicom.operator" in modules

    bare = run_isolated(modules, setup=False, tmp_path=tmp_path)
    assert bare["before"] == [], "a third-party package imported ADIT"
    failed = {
        name: outcome for name, outcome in bare["results"].items() if outcome.startswith("error")
    }
    assert failed == {}, "\n\n".join(f"{name}:\n{outcome}" for name, outcome in failed.items())
    # The DICOM layer knows no Django model: all of it imports without the app registry.
    needs_registry = sorted(
        name for name, outcome in bare["results"].items() if outcome == "registry"
    )
    assert [name for name in needs_registry if name.startswith("adit.core.dicom.")] == []

    with_registry = run_isolated(needs_registry, setup=True, tmp_path=tmp_path)
    failed = {
        name: outcome for name, outcome in with_registry["results"].items() if outcome != "ok"
    }
    assert failed == {}, "\n\n".join(f"{name}:\n{outcome}" for name, outcome in failed.items())


# --- the import graph of adit.core ------------------------------------------------------------


def _module_files(package_dir: Path) -> dict[str, Path]:
    files = {}
    for path in package_dir.rglob("*.py"):
        parts = path.relative_to(PROJECT_DIR).with_suffix("").parts
        if "tests" in parts or "migrations" in parts:
            continue
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def _imported_names(tree: ast.Module, module: str, is_package: bool) -> set[str]:
    """Dotted names each import statement may refer to (outside `if TYPE_CHECKING:`)."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def import_graph(package: str) -> dict[str, set[str]]:
    """module → the modules of `package` it imports (a name resolves to its longest module)."""
    files = _module_files(PROJECT_DIR.joinpath(*package.split(".")))
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = set()
        for name in _imported_names(tree, module, path.name == "__init__.py"):
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph as [a, b, …, a], or [] if it has none (depth-first search)."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_find_cycle_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_the_import_graph_sees_lazy_and_relative_imports():
    graph = import_graph("adit.core")
    # The jobs defer through the queue module, whose procrastinate import is inside a function.
    assert "adit.core.queue" in graph["adit.core.models.jobs"]
    assert "adit.core.models.nodes" in graph["adit.core.models.jobs"]  # `from .nodes import`
    assert "adit.core.models" in graph["adit.core.tasks"]
    assert "adit.core.dicom.config" in graph["adit.core.models.nodes"]
    # A lazy import inside a method counts.
    assert "adit.core.mail" in graph["adit.core.models.jobs"]


def test_adit_core_has_no_import_cycle():
    cycle = find_cycle(import_graph("adit.core"))
    assert cycle == [], "import cycle: " + " -> ".join(cycle)
