"""The allowed arrows between packages (docs/ARCHITECTURE.md), checked by walking every import.

* ``core`` imports no domain.
* A domain uses another domain only through its public face: ``facade`` (operations, each
  checking the caller), ``models`` and ``errors``; never its engine, service, store or repository.
* ``chalicelib`` never imports dev tooling (the local stack, demo, bench, tests) or moto.
* No import loop among ``chalicelib``'s module-level imports.
* The suite asserts no wall-clock timings (those belong in ``bench/``).
* Test modules share code only through ``tests/helpers``, ``tests/conftest.py`` fixtures and
  the suites' helper modules: never a private name, a ``test_*`` module or a directory's conftest.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHALICELIB = REPO / "chalicelib"
DOMAINS = {"auth", "registry", "abtesting", "dataversion", "explainability", "system"}
DEV_TOOLING = ("synapse_local", "demo", "bench", "tests", "moto")


@functools.cache
def source_of(path: Path) -> str:
    """The text of ``path``, read once per process (every check below reads the same files)."""
    return path.read_text(encoding="utf-8")


@functools.cache
def syntax_tree(source: str) -> ast.Module:
    """``ast.parse(source)``, once per process per text: parsing ``chalicelib`` and ``tests``
    (about 3 MB) was most of this module's time, paid again by every check. The trees are only
    read, never changed."""
    return ast.parse(source)


@functools.cache
def all_nodes(source: str) -> tuple[ast.AST, ...]:
    """Every node of ``source``'s tree (``ast.walk``), listed once per text."""
    return tuple(ast.walk(syntax_tree(source)))


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Modules imported by ``path``; ``from a import b`` yields both ``a`` and ``a.b``."""
    source = source_of(path)
    nodes = syntax_tree(source).body if top_level_only else all_nodes(source)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


@functools.cache
def _chalicelib_paths() -> tuple[tuple[str, Path], ...]:
    return tuple((module_name(p), p) for p in sorted(CHALICELIB.rglob("*.py")))


def chalicelib_modules() -> dict[str, Path]:
    return dict(_chalicelib_paths())


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
    for node in all_nodes(source):
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
        name: foreign_imports(name, source_of(path))
        for name, path in chalicelib_modules().items()
        if name.split(".")[1:2] and name.split(".")[1] in DOMAINS
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_every_data_domain_has_a_facade() -> None:
    for domain in ("registry", "abtesting", "dataversion"):
        assert (CHALICELIB / domain / "facade.py").is_file(), domain


# The layer that talks to AWS: each domain's ``repository`` (DynamoDB; a domain may split it into
# ``<thing>_repository`` modules, as abtesting's ``outcomes_repository``) and ``storage`` (S3), and
# core's plumbing (``references`` keeps the reference pins). ``explainability.service`` invokes
# the explainer function (``LambdaBackend``) through ``core.aws``: a call to compute, not to
# store, kept beside the backend that makes it.
AWS_SDKS = ("boto3", "botocore", "pynamodb", "chalicelib.core.aws")
AWS_LAYER = {"repository", "storage"}
AWS_CORE = {"aws", "tables", "events", "http", "references"}  # references: the pins table
AWS_EXCEPTIONS = {"chalicelib.explainability.service"}


def in_aws_layer(module: str) -> bool:
    """Whether a module (dotted name) is a repository or storage module."""
    last = module.rsplit(".", 1)[-1]
    return last in AWS_LAYER or last.endswith("_repository")


def _talks_to_aws(path: Path) -> bool:
    return any(i == sdk or i.startswith(f"{sdk}.") for i in imports(path) for sdk in AWS_SDKS)


def test_only_repositories_storage_and_core_plumbing_talk_to_aws() -> None:
    offenders = sorted(
        name
        for name, path in chalicelib_modules().items()
        if _talks_to_aws(path)
        and not in_aws_layer(name)
        and not (name.startswith("chalicelib.core.") and name.rsplit(".", 1)[-1] in AWS_CORE)
        and name not in AWS_EXCEPTIONS
    )
    assert offenders == []


ENTRY_MODULES = {"api", "insights_api", "layers_api", "handlers", "console"}


def test_routes_and_event_handlers_never_reach_a_repository_or_store() -> None:
    """The entry layer (routes, event handlers) calls a service or facade, never storage."""
    offenders = {
        name: sorted(i for i in imports(path) if in_aws_layer(i) and i.startswith("chal"))
        for name, path in chalicelib_modules().items()
        if name.rsplit(".", 1)[-1] in ENTRY_MODULES
    }
    assert {k: v for k, v in offenders.items() if v} == {}


ROUTE_MODULES = {"api", "insights_api", "layers_api"}


def declared_classes(source: str) -> list[str]:
    """The classes a module declares at its top level."""
    return [node.name for node in syntax_tree(source).body if isinstance(node, ast.ClassDef)]


def test_route_modules_declare_no_schema() -> None:
    """Request and response schemas live in each domain's ``schemas`` module, apart from the
    routes (issue 13 item 5); a route module declares routes only."""
    assert declared_classes("class XOut(BaseModel):\n    a: int\ndef f(): pass\n") == ["XOut"]
    offenders = {
        name: declared_classes(source_of(path))
        for name, path in chalicelib_modules().items()
        if name.rsplit(".", 1)[-1] in ROUTE_MODULES
    }
    assert {k: v for k, v in offenders.items() if v} == {}


APP_REACHES = ENTRY_MODULES | {"http", "service"}


def app_reaches_too_deep(source: str) -> list[str]:
    """The ``chalicelib`` modules ``app.py``'s source imports below the entry layer (routes,
    handlers, core's HTTP plumbing and the auth service's authenticator)."""
    modules = []
    for node in all_nodes(source):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = node.module
            modules += [f"{base}.{a.name}" if base.count(".") == 1 else base for a in node.names]
        elif isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
    return sorted(
        m
        for m in modules
        if m.startswith("chalicelib.") and m.split(".")[2:3] and m.split(".")[2] not in APP_REACHES
    )


def test_app_imports_only_the_entry_layer() -> None:
    assert app_reaches_too_deep("from chalicelib.abtesting.repository import X") == [
        "chalicelib.abtesting.repository"
    ]
    assert app_reaches_too_deep("from chalicelib.core import handlers, tables") == [
        "chalicelib.core.tables"
    ]
    assert app_reaches_too_deep((REPO / "app.py").read_text(encoding="utf-8")) == []


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


# Names that say a value is a measured duration, whatever it was computed from.
DURATION_NAMES = {"elapsed", "duration", "took"}
CLOCKS = {"perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns", "time", "time_ns"}
ORDERINGS = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)


def _clock_names(nodes: tuple[ast.AST, ...]) -> set[str]:
    """Names bound to a clock by ``from time import perf_counter`` (and the like)."""
    return {
        alias.asname or alias.name
        for node in nodes
        if isinstance(node, ast.ImportFrom) and node.module == "time"
        for alias in node.names
        if alias.name in CLOCKS
    }


def _is_clock_call(node: ast.AST, clocks: set[str]) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Name):
        return func.id in clocks
    return (
        isinstance(func, ast.Attribute)
        and func.attr in CLOCKS
        and isinstance(func.value, ast.Name)
        and func.value.id == "time"
    )


class _Clocks:
    """What a module reads from clocks: readings (``t0 = perf_counter()``) and durations (a
    difference with a reading on one side, and anything computed from a duration)."""

    def __init__(self, nodes: tuple[ast.AST, ...]) -> None:
        self.clocks = _clock_names(nodes)
        self.readings: set[str] = set()
        self.durations: set[str] = set()
        assignments = [
            (target, node.value)
            for node in nodes
            if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign)
            and node.value is not None
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        ]
        changed = True
        while changed:
            changed = False
            for target, value in assignments:
                names = {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
                if self.is_duration(value) and not names <= self.durations:
                    self.durations |= names
                    changed = True
                elif self.is_reading(value) and not names <= self.readings | self.durations:
                    self.readings |= names
                    changed = True

    def is_reading(self, node: ast.AST) -> bool:
        """``node`` is a clock reading or a name holding one."""
        if isinstance(node, ast.Name):
            return node.id in self.readings
        return _is_clock_call(node, self.clocks)

    def is_duration(self, node: ast.AST) -> bool:
        """``node`` computes something from a difference of clock readings."""
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and (sub.id in self.durations or sub.id in DURATION_NAMES):
                return True
            if (
                isinstance(sub, ast.BinOp)
                and isinstance(sub.op, ast.Sub)
                and (self.is_reading(sub.left) or self.is_reading(sub.right))
            ):
                return True
        return False


def wall_clock_assertions(source: str) -> list[int]:
    """Lines of ``source`` asserting an ordering (<, <=, >, >=) on a measured duration: a
    difference of clock readings (``time.perf_counter``, ``time.monotonic``, ``time.time``,
    under any import name), anything computed from one, or a name that says it is one
    (``elapsed``, ``duration``, ``took``). Comparing a reading with a deadline or a timestamp
    with the readings around it measures no speed and passes."""
    nodes = all_nodes(source)
    orderings = [
        (node.lineno, compare)
        for node in nodes
        if isinstance(node, ast.Assert)
        for compare in ast.walk(node.test)
        if isinstance(compare, ast.Compare) and any(isinstance(op, ORDERINGS) for op in compare.ops)
    ]
    if not orderings:  # nothing to check: spare the module's clock analysis
        return []
    clocks = _Clocks(nodes)
    return sorted(
        {
            line
            for line, compare in orderings
            if any(clocks.is_duration(side) for side in [compare.left, *compare.comparators])
        }
    )


def test_the_wall_clock_check_catches_timings_under_any_name() -> None:
    check = wall_clock_assertions
    assert check("import time\nt0 = time.perf_counter()\nf()\nt = time.perf_counter() - t0\n"
                 "assert t < 1.0\n") == [5]  # fmt: skip
    assert check("from time import monotonic as m\nstart = m()\nf()\n"
                 "spent = (m() - start) * 1000\nassert 5 >= spent\n") == [5]  # fmt: skip
    assert check("import time\nassert time.time() - started <= 2\n") == [2]
    # The samples below are built from parts so that this file's own lines are not samples.
    timed, unit = "elapsed", "seconds"
    assert check(f"assert {timed} < budget\n") == [1]
    # Not timings: a deadline for a poll, a timestamp between the readings around it, an
    # equality, an estimate named as one.
    assert check("import time\ndeadline = time.monotonic() + 5\n"
                 "assert time.monotonic() < deadline\n") == []  # fmt: skip
    assert check("import time\nbefore = time.time()\nat = f()\nafter = time.time()\n"
                 "assert before <= at <= after\n") == []  # fmt: skip
    assert check("import time\nt = time.time()\nassert record.at - t == 0\n") == []
    assert check(f"assert static_estimate.{unit} <= measured_estimate.{unit}\n") == []


def test_the_suite_asserts_no_wall_clock_timings() -> None:
    offenders = []
    for path in (REPO / "tests").rglob("*.py"):
        lines = wall_clock_assertions(source_of(path))
        offenders += [f"{path.relative_to(REPO)}:{line}" for line in lines]
    assert offenders == [], "move timings to bench/"


# ---- the suite: shared test code lives in helper modules and fixtures ------------------------


def suite_import_violations(module: str, source: str) -> list[str]:
    """What a test-suite module imports that it should not: a private name of another test
    module, anything from a ``test_*`` module (test modules are not libraries: shared builders go
    to ``tests/helpers`` or a fixture) or a conftest other than the root one."""
    found = []
    for node in all_nodes(source):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            pairs = [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            pairs = [(alias.name, "") for alias in node.names]
        else:
            continue
        for target, name in pairs:
            if target.split(".")[0] != "tests" or target == module:
                continue
            last = target.rsplit(".", 1)[-1]
            if name.startswith("_") or last.startswith("_"):
                found.append(f"{target}.{name} (private)")
            elif last.startswith("test_") or name.startswith("test_"):
                found.append(f"{target}.{name} (a test module)")
            elif last == "conftest" and target != "tests.conftest":
                found.append(f"{target}.{name} (a directory's conftest)")
    return sorted(found)


def test_the_suite_import_check_catches_private_and_test_module_imports() -> None:
    module = "tests.integration.test_x"
    check = suite_import_violations
    assert check(module, "from tests.integration.test_y import _helper") == [
        "tests.integration.test_y._helper (private)"
    ]
    assert check(module, "def f():\n    from tests.unit.test_y import helper\n") == [
        "tests.unit.test_y.helper (a test module)"
    ]
    assert check(module, "from tests.reliability.seeding import _body") == [
        "tests.reliability.seeding._body (private)"
    ]
    assert check(module, "from tests.client.conftest import builder") == [
        "tests.client.conftest.builder (a directory's conftest)"
    ]
    assert check(module, "import tests.e2e.test_make_run") == [
        "tests.e2e.test_make_run. (a test module)"
    ]
    allowed = (
        "from tests.conftest import Http, Tokens\n"
        "from tests.helpers.abtesting import running_experiment as _running\n"
        "from tests.security import forge\n"
        "from chalicelib.core.http import _private\n"  # not the suite's business here
    )
    assert check(module, allowed) == []


def test_test_modules_share_code_only_through_helpers_and_fixtures() -> None:
    offenders = {}
    for path in (REPO / "tests").rglob("*.py"):
        found = suite_import_violations(module_name(path), source_of(path))
        if found:
            offenders[module_name(path)] = found
    assert offenders == {}
