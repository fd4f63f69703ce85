"""The allowed arrows between packages (docs/ARCHITECTURE.md), checked by walking every import.

* ``core`` imports no domain.
* A domain uses another domain only through its public face: ``facade`` (operations, each
  checking the caller), ``models`` and ``errors``; never its engine, service, store or repository.
* ``chalicelib`` never imports dev tooling (the local stack, demo, bench, tests) or moto.
* No import loop among ``chalicelib``'s module-level imports.
* The suite asserts no wall-clock timings (those belong in ``bench/``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHALICELIB = REPO / "chalicelib"
DOMAINS = {"auth", "registry", "abtesting", "dataversion", "explainability", "system"}
DEV_TOOLING = ("synapse_local", "demo", "bench", "tests", "moto")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Modules imported by ``path``; ``from a import b`` yields both ``a`` and ``a.b``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def chalicelib_modules() -> dict[str, Path]:
    return {module_name(p): p for p in CHALICELIB.rglob("*.py")}


def test_core_imports_no_domain() -> None:
    offenders = {
        name: sorted(i for i in imports(path) if i.split(".")[:2][-1] in DOMAINS)
        for name, path in chalicelib_modules().items()
        if name.startswith("chalicelib.core")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_chalicelib_never_imports_dev_tooling() -> None:
    offenders = {
        name: sorted(i for i in imports(path) if i.split(".")[0] in DEV_TOOLING)
        for name, path in chalicelib_modules().items()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


PUBLIC_FACE = {"facade", "models", "errors"}


def foreign_imports(module: str, source: str) -> list[str]:
    """What ``module`` (``chalicelib.<domain>.…``) imports from other domains beyond their
    public face, at any depth (lazy imports inside functions count)."""
    own = module.split(".")[1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = node.module.split(".")
            # ``from chalicelib.registry import facade`` names the submodule in the alias.
            targets = [base + [a.name] if len(base) == 2 else base for a in node.names]
        else:
            continue
        for parts in targets:
            if parts[0] != "chalicelib" or len(parts) < 2 or parts[1] not in DOMAINS:
                continue
            if parts[1] != own and (len(parts) < 3 or parts[2] not in PUBLIC_FACE):
                found.append(".".join(parts))
    return sorted(set(found))


def test_the_public_face_check_catches_a_reach_into_another_domain() -> None:
    module = "chalicelib.explainability.loading"
    assert foreign_imports(module, "from chalicelib.dataversion.storage import DataStore") == [
        "chalicelib.dataversion.storage"
    ]
    assert foreign_imports(module, "def f():\n    import chalicelib.registry.service\n") == [
        "chalicelib.registry.service"
    ]
    assert foreign_imports(module, "from chalicelib.registry import service, facade") == [
        "chalicelib.registry.service"
    ]
    allowed = (
        "from chalicelib.registry import facade\n"
        "from chalicelib.dataversion.models import Dataset\n"
        "from chalicelib.abtesting.errors import ExperimentNotFound\n"
        "from chalicelib.explainability.service import x\n"  # its own domain
        "from chalicelib.core.access import can_read\n"
    )
    assert foreign_imports(module, allowed) == []


def test_domains_use_each_other_only_through_their_public_face() -> None:
    offenders = {
        name: foreign_imports(name, path.read_text(encoding="utf-8"))
        for name, path in chalicelib_modules().items()
        if name.split(".")[1:2] and name.split(".")[1] in DOMAINS
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_every_data_domain_has_a_facade() -> None:
    for domain in ("registry", "abtesting", "dataversion"):
        assert (CHALICELIB / domain / "facade.py").is_file(), domain


def _graph() -> dict[str, set[str]]:
    modules = chalicelib_modules()
    return {
        name: {i for i in imports(path, top_level_only=True) if i in modules and i != name}
        for name, path in modules.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_loop() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_loop_among_module_level_imports() -> None:
    assert _cycle(_graph()) is None


TIMING = re.compile(r"assert[^\n]*\b(elapsed|duration|seconds|took)\b[^\n]*<")
TIMERS = re.compile(r"\b(time\.perf_counter|time\.monotonic|time\.time)\(\)")


def test_the_suite_asserts_no_wall_clock_timings() -> None:
    offenders = []
    for path in (REPO / "tests").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if TIMERS.search(text) and TIMING.search(text):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == [], "move timings to bench/"
