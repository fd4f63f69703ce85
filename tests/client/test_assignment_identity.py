"""The client assigns with exactly the service's code: the copy is identical and pure."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVICE_COPY = REPO / "chalicelib" / "abtesting" / "assignment.py"
CLIENT_COPY = REPO / "synapse_client" / "_assignment.py"


def test_client_assignment_module_is_a_byte_for_byte_copy_of_the_services() -> None:
    assert CLIENT_COPY.read_bytes() == SERVICE_COPY.read_bytes(), (
        "synapse_client/_assignment.py differs from chalicelib/abtesting/assignment.py: "
        "cp chalicelib/abtesting/assignment.py synapse_client/_assignment.py"
    )


def test_assignment_module_imports_only_the_standard_library() -> None:
    tree = ast.parse(SERVICE_COPY.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported - {"__future__"} <= set(sys.stdlib_module_names)


def test_the_service_router_builds_its_tables_with_the_shared_assigner() -> None:
    from chalicelib.abtesting import routing
    from chalicelib.abtesting.assignment import Assigner

    assert issubclass(routing.RouteTable, Assigner)


def test_the_user_picker_follows_the_state_of_the_config() -> None:
    import pytest

    from chalicelib.abtesting.assignment import Assigner, NotRoutable

    variants = [{"variant_id": "t", "model_version": 2, "weight": "0.5"},
                {"variant_id": "c", "model_version": 1, "weight": "0.5"}]  # fmt: skip
    running = Assigner({"salt": "s", "variants": variants})
    assert running.user_picker() is running.pick
    assert running.user_picker()("u-1") == running.route("r", "u-1")
    paused = Assigner({"salt": "s", "variants": variants,
                       "fixed": {"variant_id": "c", "model_version": 1}})  # fmt: skip
    assert paused.user_picker()("anyone") == ("c", 1)
    draft = Assigner({"salt": "s", "variants": variants, "blocked": "not started"})
    with pytest.raises(NotRoutable, match="not started"):
        draft.user_picker()("u-1")
    assert Assigner({"salt": "s", "variants": variants, "sticky_store": True}).user_picker() is None
