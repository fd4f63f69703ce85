"""Deployment packaging: the zip fits Lambda, the template is lint-clean and covers the app.

The package and template are built once per session from the current app and tables (``python -m
infra.package`` in a subprocess, as ``make package`` runs it), so a new table, handler or queue
is covered without touching these tests. The Lambda dependencies are installed and zipped once
per requirement set into the machine's build cache (``infra.package.shared_cache``, outside the
clone), and a template's clean cfn-lint is remembered there by its bytes and the linters' versions.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from infra import access as access_module
from infra.chalice_build import (
    PackagingError,
    SynapseSAMGenerator,
    package_chalice_app,
    seed_deployment_package,
    zip_dependencies,
)
from infra.package import shared_cache
from infra.sizes import ZIP_UNZIPPED_LIMIT, zip_function_total, zip_unzipped_bytes

REPO = Path(__file__).resolve().parents[2]
STAGE = "prod"
HEAVY = {
    *("shap", "sklearn", "numba", "llvmlite", "pandas", "lime", "skimage", "matplotlib"),
    *("xgboost", "lightgbm"),
}
HEAVY_DISTS = {
    *("shap", "scikit_learn", "numba", "llvmlite", "pandas", "lime", "scikit_image"),
    *("xgboost", "xgboost_cpu", "lightgbm"),
}
TABLE_TYPE = "AWS::DynamoDB::Table"
FUNCTION_TYPE = "AWS::Serverless::Function"


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m infra.package --stage prod`` into a temporary directory, with the machine's
    build cache (:func:`infra.package.shared_cache`: the Lambda dependencies and their zip,
    named after the requirements, are installed and deflated once, not once per clone)."""
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "infra.package", "--stage", STAGE, "--out", str(out)]
    result = subprocess.run(
        [*command, "--cache", str(shared_cache())],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return out


@pytest.fixture(scope="module")
def template(packaged: Path) -> dict[str, Any]:
    return json.loads((packaged / "template.json").read_text())


@pytest.fixture(scope="module")
def zip_names(packaged: Path) -> list[str]:
    with zipfile.ZipFile(packaged / "deployment.zip") as archive:
        return archive.namelist()


@pytest.fixture(scope="module")
def stage_env() -> dict[str, str]:
    config = json.loads((REPO / ".chalice" / "config.json").read_text())
    return {**config["environment_variables"], **config["stages"][STAGE]["environment_variables"]}


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _zip_functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        k: v for k, v in _resources(template, FUNCTION_TYPE).items() if "CodeUri" in v["Properties"]
    }


# --- Limits and contents of the zip ------------------------------------------------------------


def test_zip_functions_fit_the_250mb_unzipped_limit_with_their_layers(packaged: Path) -> None:
    zips = sorted(packaged.glob("*.zip"))
    assert [z.name for z in zips if z.name == "deployment.zip"] == ["deployment.zip"]
    total = sum(zip_unzipped_bytes(z) for z in zips)
    assert total <= ZIP_UNZIPPED_LIMIT, f"{total / 2**20:.1f} MB unzipped"
    sizes = json.loads((packaged / "sizes.json").read_text())
    assert sizes["zip_function_unzipped_bytes"] == total
    assert sizes["fits"] is True


def test_zip_package_carries_no_explanation_dependencies(zip_names: list[str]) -> None:
    top = {name.split("/", 1)[0] for name in zip_names}
    assert not top & HEAVY
    dists = {n.split("-", 1)[0].lower() for n in top if n.endswith(".dist-info")}
    assert not dists & HEAVY_DISTS


def test_zip_package_carries_no_dev_tooling(zip_names: list[str]) -> None:
    top = {name.split("/", 1)[0] for name in zip_names}
    assert not top & {"moto", "synapse_local", "demo", "bench", "tests", "werkzeug", "flask"}
    dists = {n.split("-", 1)[0].lower() for n in top if n.endswith(".dist-info")}
    assert not dists & {"moto", "werkzeug", "flask", "pytest", "schemathesis"}
    assert not any(n.startswith("chalicelib/local/") for n in zip_names)


def test_zip_package_holds_the_app_and_its_light_dependencies(zip_names: list[str]) -> None:
    names = set(zip_names)
    for required in (
        "app.py",
        "chalice/app.py",
        "chalicelib/core/tables.py",
        "chalicelib/system/console/index.html",
        "chalicelib/system/console/app.js",
    ):
        assert required in names  # the web console's files are served by the API function
    top = {name.split("/", 1)[0] for name in zip_names}
    assert {"numpy", "scipy", "pynamodb", "pydantic", "aws_lambda_powertools"} <= top
    dev_pins = (REPO / "requirements-dev.txt").read_text()
    boto3_version = re.search(r"^boto3==(\S+)", dev_pins, re.M).group(1)
    assert f"boto3-{boto3_version}.dist-info/METADATA" in names
    assert not any("__pycache__" in n for n in names)


def _wheel_tags(archive: zipfile.ZipFile) -> dict[str, list[str]]:
    tags: dict[str, list[str]] = {}
    for name in archive.namelist():
        if name.endswith(".dist-info/WHEEL"):
            text = archive.read(name).decode()
            tags[name.split("/")[0]] = re.findall(r"^Tag: (\S+)$", text, re.M)
    return tags


def _loadable_on_python312_al2023(tag: str) -> bool:
    """Whether a wheel tag can be imported by CPython 3.12 on x86_64 glibc 2.34."""
    python, abi, platform = tag.split("-")
    cpython = re.fullmatch(r"cp3(\d+)", python)
    if abi == "abi3":
        python_ok = bool(cpython) and int(cpython.group(1)) <= 12
    else:
        python_ok = python in {"py3", "py2.py3", "cp312"} and abi in {"none", "cp312"}
    if not python_ok:
        return False
    if platform == "any":
        return True
    legacy = {"manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"}
    glibc = re.fullmatch(r"manylinux_(\d+)_(\d+)_x86_64", platform)
    return platform in legacy or bool(glibc) and (int(glibc[1]), int(glibc[2])) <= (2, 34)


def test_zip_wheels_are_loadable_by_the_python312_runtime(
    packaged: Path, template: dict[str, Any]
) -> None:
    runtimes = {f["Properties"]["Runtime"] for f in _zip_functions(template).values()}
    assert runtimes == {"python3.12"}
    with zipfile.ZipFile(packaged / "deployment.zip") as archive:
        tags = _wheel_tags(archive)
    assert tags
    bad = {d: t for d, t in tags.items() if not any(_loadable_on_python312_al2023(x) for x in t)}
    assert not bad


def test_wheel_tag_check_rejects_what_amazon_linux_2023_cannot_load() -> None:
    assert _loadable_on_python312_al2023("cp312-cp312-manylinux_2_27_x86_64")
    assert _loadable_on_python312_al2023("py3-none-any")
    assert not _loadable_on_python312_al2023("cp311-cp311-manylinux_2_17_x86_64")
    assert not _loadable_on_python312_al2023("cp312-cp312-manylinux_2_39_x86_64")
    assert not _loadable_on_python312_al2023("cp312-cp312-macosx_11_0_arm64")
    assert not _loadable_on_python312_al2023("cp312-cp312-manylinux_2_28_aarch64")
    assert _loadable_on_python312_al2023("cp39-abi3-manylinux2014_x86_64")
    assert not _loadable_on_python312_al2023("cp313-abi3-manylinux2014_x86_64")


def test_size_helpers_sum_uncompressed_members(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.txt", "a" * 10_000)
        archive.writestr("d/y.bin", b"\0" * 5_000)
    assert zip_unzipped_bytes(path) == 15_000
    assert path.stat().st_size < 15_000
    from infra.sizes import Artifact

    parts = [Artifact("f", "zip", 200, 1, 250), Artifact("i", "image", 10**9, 0, 10**10)]
    assert zip_function_total(parts) == 200


def test_size_report_breaks_the_explainer_image_down_by_library(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``make package --image`` prints (and writes to ``sizes.json``) each library of the
    explainer image: every distribution of ``layers/explainer/requirements.txt`` by name, its
    files counted with the bytecode compiled after installation."""
    from infra.package import EXPLAINER_REQUIREMENTS, report
    from infra.sizes import MB, measure_tree, measure_zip

    wanted = [
        re.split(r"[=<>~!; \[]", line.strip(), maxsplit=1)[0]
        for line in EXPLAINER_REQUIREMENTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {"xgboost-cpu", "lightgbm", "shap", "lime", "scikit-learn"} <= set(wanted)
    site = tmp_path / "site"
    for index, name in enumerate(wanted):
        package = site / f"pkg{index}"
        (package / "__pycache__").mkdir(parents=True)
        (package / "__init__.py").write_bytes(b"x" * (index + 1) * MB)
        (package / "__pycache__" / "__init__.pyc").write_bytes(b"c" * 1000)  # not in RECORD
        info = site / f"{name.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "RECORD").write_text(f"pkg{index}/__init__.py,sha256=x,{(index + 1) * MB}\n")
    (site / "stray.pth").write_text("nobody's")
    out = tmp_path / "dist"
    out.mkdir()
    with zipfile.ZipFile(out / "deployment.zip", "w") as archive:
        archive.writestr("app.py", "app = None\n")
    image = measure_tree(site, "explainer image")
    assert report(out, [measure_zip(out / "deployment.zip"), image]) is True
    printed = capsys.readouterr().out
    line = next(text for text in printed.splitlines() if text.startswith("explainer image by"))
    sizes = json.loads((out / "sizes.json").read_text())["artifacts"][1]["parts"]
    for index, name in enumerate(wanted):
        expected = (
            (index + 1) * MB + 1000 + len(f"pkg{index}/__init__.py,sha256=x,{(index + 1) * MB}\n")
        )
        assert sizes[name] == expected
        assert f"{name} {expected / MB:.1f}" in line
    assert sizes["(other)"] == len("nobody's")
    assert image.unzipped_bytes == sum(sizes.values())


# --- Template validity ---------------------------------------------------------------------


def test_template_and_its_sam_expansion_are_cfn_lint_clean(packaged: Path) -> None:
    from infra.validate import validate

    # The machine's cache remembers templates found clean (by their bytes and the linters'
    # versions): an unchanged template is not linted again, a changed one always is.
    assert validate(packaged / "template.json", cache=shared_cache()) == []


def test_only_a_clean_lint_of_the_same_bytes_is_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infra import validate as validate_module

    template = tmp_path / "template.json"
    template.write_text('{"Resources": {}}\n')
    cache = tmp_path / "cache"
    linted: list[str] = []
    findings = ["E3001 a finding"]

    def lint_twice(path: Path) -> list[str]:
        linted.append(path.read_text())
        return list(findings)

    monkeypatch.setattr(validate_module, "_validate", lint_twice)
    assert validate_module.validate(template, cache) == findings
    assert validate_module.validate(template, cache) == findings  # findings are not remembered
    assert len(linted) == 2 and not cache.exists()
    findings.clear()
    assert validate_module.validate(template, cache) == []
    assert validate_module.validate(template, cache) == []  # remembered: not linted again
    assert len(linted) == 3
    template.write_text('{"Resources": {} }\n')  # one byte more
    assert validate_module.validate(template, cache) == []
    assert len(linted) == 4
    assert validate_module.validate(template) == [] and len(linted) == 5  # no cache: always


def test_a_remembered_clean_lint_is_not_used_once_the_linters_or_their_rules_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another cfn-lint or SAM translator version, or of a library either requires, another
    Python, or another validate.py, lints the same bytes again; so does any cfn-lint
    configuration file (``.cfnlintrc`` in the home or the current directory, which can add rules
    from files no key sees): with one present, a lint is never taken from memory, and the rule
    it adds finds what it finds."""
    import importlib.metadata
    import platform

    from infra import validate as validate_module

    monkeypatch.chdir(tmp_path)
    template = tmp_path / "template.json"
    template.write_text(
        '{"AWSTemplateFormatVersion": "2010-09-09", "Resources": {"Queue": '
        '{"Type": "AWS::SQS::Queue", "Properties": {"VisibilityTimeout": 30}}}}\n'
    )
    cache, linted = tmp_path / "cache", []
    real_validate, real_version, real_read = (
        validate_module._validate,
        importlib.metadata.version,
        Path.read_text,
    )
    monkeypatch.setattr(validate_module, "_validate", lambda path: linted.append(path) or [])
    assert (
        validate_module.validate(template, cache) == [] == validate_module.validate(template, cache)
    )
    assert len(linted) == 1
    for tool in ("cfn-lint", "aws-sam-translator", "jsonschema", "networkx"):
        linted.clear()
        monkeypatch.setattr(
            importlib.metadata,
            "version",
            lambda name, tool=tool: "99.0" if name == tool else real_version(name),
        )
        assert validate_module.validate(template, cache) == [] and len(linted) == 1
        monkeypatch.setattr(importlib.metadata, "version", real_version)
        validate_module.validate(template, cache)
        assert len(linted) == 1  # the same versions again: remembered
    linted.clear()
    real_python = platform.python_version
    monkeypatch.setattr(platform, "python_version", lambda: "3.99.0")
    assert validate_module.validate(template, cache) == [] and len(linted) == 1
    monkeypatch.setattr(platform, "python_version", real_python)
    linted.clear()
    edited = Path(validate_module.__file__)

    def read_edited(path: Path, *args: Any, **kwargs: Any) -> str:
        text = real_read(path, *args, **kwargs)
        return text + "# edited\n" if path == edited else text

    monkeypatch.setattr(Path, "read_text", read_edited)
    assert validate_module.validate(template, cache) == [] and len(linted) == 1
    monkeypatch.setattr(Path, "read_text", real_read)
    monkeypatch.setattr(validate_module, "_validate", real_validate)
    (tmp_path / "rules.txt").write_text('AWS::SQS::Queue VisibilityTimeout < 10 ERROR "too long"\n')
    (tmp_path / ".cfnlintrc").write_text("custom_rules: rules.txt\n")
    assert validate_module.validate(template, cache) == [
        f"E9001 too long ({template}:1)",
        f"E9001 too long ({template.with_suffix('.expanded.json')}:6)",
    ]


def test_a_clean_lint_remembered_in_one_region_is_linted_again_in_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SAM expansion writes the region's partition into its ARNs (``aws-cn`` in
    ``cn-north-1``), so a template found clean with one ``AWS_DEFAULT_REGION`` is linted again
    with another, and remembered for each."""
    from infra import validate as validate_module

    template, cache, linted = tmp_path / "template.json", tmp_path / "cache", []
    template.write_text('{"Resources": {}}\n')
    monkeypatch.setattr(validate_module, "_validate", lambda path: linted.append(path) or [])
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    assert validate_module.validate(template, cache) == [] and len(linted) == 1
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # what an unset region expands in
    assert validate_module.validate(template, cache) == [] and len(linted) == 1
    monkeypatch.setenv("AWS_DEFAULT_REGION", "cn-north-1")
    assert validate_module.validate(template, cache) == [] and len(linted) == 2
    assert validate_module.validate(template, cache) == [] and len(linted) == 2
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-gov-west-1")
    assert validate_module.validate(template, cache) == [] and len(linted) == 3


@pytest.fixture
def small_apps_imported(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Chalice imports a packaged project's app.py as ``app`` (from the project's directory,
    put on ``sys.path``): this process's own app module is put back, the small one removed,
    and ``sys.path`` restored afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    own_app = sys.modules.pop("app", None)
    yield
    sys.modules.pop("app", None)
    if own_app is not None:
        sys.modules["app"] = own_app


@pytest.mark.usefixtures("small_apps_imported")
def test_a_seeded_deployment_zip_holds_exactly_what_chalices_own_build_holds(
    tmp_path: Path,
) -> None:
    """``infra.package`` hands Chalice a zip made from the dependencies' zip (made once per
    dependency set) plus the app's files; Chalice's packager reuses it. Built both ways for a
    small project, the two zips hold the same members with the same bytes, times and modes."""
    own, seeded, seed = _package_both_ways(tmp_path)
    assert seeded.read_bytes() == seed.read_bytes()  # Chalice reused the seed, built nothing
    assert _members(seeded) == _members(own)
    assert {"app.py", "chalicelib/__init__.py", "chalice/app.py", "dep/sub/data.bin"} <= set(
        _members(seed)
    )


@pytest.mark.usefixtures("small_apps_imported")
def test_a_project_staged_again_after_edits_packages_as_chalice_builds_it(tmp_path: Path) -> None:
    """``make package`` stages the project into the same ``dist/.project`` every time: after a
    chalicelib file is deleted, another added, app.py changed and the requirements changed (a
    new vendor directory), the seeded zip holds what Chalice's own build of the edited project
    holds, and nothing of the first build."""
    from infra.package import stage_project

    project, vendor = _small_project(tmp_path)
    (project / "chalicelib" / "old.py").write_text("GONE = True\n")
    stage, cache = tmp_path / "dist" / ".project", tmp_path / "cache"

    def build(source: Path, out: Path, dependencies: Path | None) -> dict[str, Any]:
        sys.modules.pop("app", None)  # Chalice imports each project's app.py as ``app``
        if dependencies is not None:
            stage_project(project, stage, dependencies)
            seed_deployment_package(stage, STAGE, zip_dependencies(dependencies, cache))
        package_chalice_app(source, STAGE, out, {})
        return _members(out / "deployment.zip")

    first = build(stage, tmp_path / "first", vendor)
    assert "chalicelib/old.py" in first
    (project / "chalicelib" / "old.py").unlink()
    (project / "chalicelib" / "new").mkdir()
    (project / "chalicelib" / "new" / "sub.py").write_text("ADDED = True\n")
    (project / "app.py").write_text((project / "app.py").read_text() + "# edited\n")
    other = tmp_path / "vendor-python3.12-fedcba9876543210"
    (other / "dep2").mkdir(parents=True)
    (other / "dep2" / "__init__.py").write_text("z = 3\n")
    (project / "vendor").unlink()
    (project / "vendor").symlink_to(other, target_is_directory=True)
    seeded = build(stage, tmp_path / "second", other)
    own = build(project, tmp_path / "own", None)
    assert seeded == own
    assert "chalicelib/new/sub.py" in own and "dep2/__init__.py" in own
    assert seeded["app.py"] != first["app.py"]


@pytest.mark.usefixtures("small_apps_imported")
def test_a_stage_with_chalices_automatic_layer_still_packages_through_the_seeding_step(
    tmp_path: Path,
) -> None:
    """``infra.package`` seeds before Chalice packages; a stage whose ``automatic_layer`` is on
    (Chalice then builds ``layer-deployment.zip`` beside the app's zip) is not seeded, and
    Chalice builds both zips as before the seeding step existed."""
    project, vendor = _small_project(tmp_path)
    config = json.loads((project / ".chalice" / "config.json").read_text())
    (project / ".chalice" / "config.json").write_text(
        json.dumps({**config, "automatic_layer": True})
    )
    seed = seed_deployment_package(project, STAGE, zip_dependencies(vendor, tmp_path / "c"))
    package_chalice_app(project, STAGE, tmp_path / "out", {})
    assert seed is None
    assert sorted(p.name for p in (tmp_path / "out").glob("*.zip")) == [
        "deployment.zip",
        "layer-deployment.zip",
    ]
    assert "chalicelib/__init__.py" in _members(tmp_path / "out" / "deployment.zip")


def _members(path: Path) -> dict[str, tuple[Any, ...]]:
    with zipfile.ZipFile(path) as archive:
        return {
            i.filename: (archive.read(i), i.compress_type, i.date_time, i.external_attr)
            for i in archive.infolist()
        }


def _small_vendor(root: Path) -> Path:
    vendor = root / "vendor-python3.12-0123456789abcdef"
    (vendor / "dep" / "sub").mkdir(parents=True)
    (vendor / "dep" / "__init__.py").write_text("x = 1\n" * 1000)
    (vendor / "dep" / "sub" / "data.bin").write_bytes(bytes(range(256)) * 64)
    (vendor / "dep-1.0.dist-info").mkdir()
    (vendor / "dep-1.0.dist-info" / "RECORD").write_text("dep/__init__.py,,\n")
    return vendor


def _small_project(tmp_path: Path) -> tuple[Path, Path]:
    """A small Chalice project (app, chalicelib, config) whose ``vendor`` links to a small
    dependency directory: both paths."""
    project = tmp_path / "project"
    (project / ".chalice").mkdir(parents=True)
    (project / ".chalice" / "config.json").write_text(
        json.dumps({"version": "2.0", "app_name": "seeded", "stages": {STAGE: {}}})
    )
    (project / "app.py").write_text(
        "from chalice import Chalice\n\napp = Chalice('seeded')\n\n\n"
        "@app.lambda_function()\ndef handler(event, context):\n    return event\n"
    )
    (project / "chalicelib").mkdir()
    (project / "chalicelib" / "__init__.py").write_text("ANSWER = 42\n")
    vendor = _small_vendor(tmp_path)
    (vendor / "dep" / "tool.sh").write_text("#!/bin/sh\n")
    (vendor / "dep" / "tool.sh").chmod(0o755)
    (project / "vendor").symlink_to(vendor, target_is_directory=True)
    return project, vendor


def _package_both_ways(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A small Chalice project packaged by Chalice alone, then from a seeded zip: the two
    ``deployment.zip`` files and the seed."""
    project, vendor = _small_project(tmp_path)
    own = tmp_path / "own"
    package_chalice_app(project, STAGE, own, {})
    seeded = tmp_path / "seeded"
    seed = seed_deployment_package(project, STAGE, zip_dependencies(vendor, tmp_path / "cache"))
    package_chalice_app(project, STAGE, seeded, {})
    return own / "deployment.zip", seeded / "deployment.zip", seed


def _chalice_vendor_members(vendor: Path, tmp_path: Path) -> dict[str, tuple[Any, ...]]:
    """The members Chalice's own packager writes for a project's ``vendor/`` (the oracle)."""
    from chalice.deploy.packager import LambdaDeploymentPackager
    from chalice.utils import UI, OSUtils

    path = tmp_path / "chalice-vendor.zip"
    with OSUtils().open_zip(str(path), "w", zipfile.ZIP_DEFLATED) as archive:
        LambdaDeploymentPackager(OSUtils(), None, UI())._add_vendor_files(archive, str(vendor))
    return _members(path)


def test_the_dependencies_zip_follows_the_vendor_directory_it_was_made_from(
    tmp_path: Path,
) -> None:
    """A vendor directory reinstalled, or with a file changed, deleted, added or made
    executable, gets a zip of what it holds now (as Chalice would zip it), never the zip of what
    it held before; an unchanged one reuses its zip without writing it again."""
    vendor, cache = _small_vendor(tmp_path), tmp_path / "cache"
    first = zip_dependencies(vendor, cache)
    written = first.stat().st_mtime_ns
    assert zip_dependencies(vendor, cache) == first and first.stat().st_mtime_ns == written
    assert _members(first) == _chalice_vendor_members(vendor, tmp_path)
    changes = (
        lambda: (vendor / "dep" / "__init__.py").write_text("x = 2\n" * 999),
        lambda: (vendor / "dep" / "sub" / "data.bin").unlink(),
        lambda: (vendor / "dep" / "new.py").write_text("y = 1\n"),
        lambda: (vendor / "dep" / "new.py").chmod(0o755),
    )
    for change in changes:
        change()
        assert _members(zip_dependencies(vendor, cache)) == _chalice_vendor_members(
            vendor, tmp_path
        )


def test_a_truncated_or_interrupted_dependencies_zip_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached zip cut short (a crash before its bytes reached the disk) is made again instead
    of failing the package; a build interrupted mid-write leaves no zip and no partial file."""
    from chalice.utils import ChaliceZipFile

    vendor, cache = _small_vendor(tmp_path), tmp_path / "cache"
    target = zip_dependencies(vendor, cache)
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    assert _members(zip_dependencies(vendor, cache)) == _chalice_vendor_members(vendor, tmp_path)
    target.unlink()
    real_write, calls = ChaliceZipFile.write, []

    def interrupted(self: Any, filename: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(filename)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_write(self, filename, *args, **kwargs)

    monkeypatch.setattr(ChaliceZipFile, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        zip_dependencies(vendor, cache)
    assert list(cache.iterdir()) == []
    monkeypatch.setattr(ChaliceZipFile, "write", real_write)
    assert _members(zip_dependencies(vendor, cache)) == _chalice_vendor_members(vendor, tmp_path)


def test_two_builders_filling_the_dependencies_zip_at_once_each_get_a_whole_zip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two builds that find no zip and write it at the same moment (two threads here; two
    containers sharing the cache can have the same pid) each end with a whole zip."""
    import threading

    from chalice.utils import OSUtils

    vendor, cache = _small_vendor(tmp_path), tmp_path / "cache"
    both_writing = threading.Barrier(2, timeout=60)
    real_open_zip = OSUtils.open_zip

    def open_together(self: Any, *args: Any, **kwargs: Any) -> Any:
        archive = real_open_zip(self, *args, **kwargs)
        both_writing.wait()  # both have opened their partial file before either writes
        return archive

    monkeypatch.setattr(OSUtils, "open_zip", open_together)
    results: list[Any] = [None, None]

    def build(slot: int) -> None:
        try:
            results[slot] = zip_dependencies(vendor, cache)
        except BaseException as error:  # reported below, with the other builder's outcome
            results[slot] = error

    threads = [threading.Thread(target=build, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(isinstance(result, Path) for result in results), results
    monkeypatch.setattr(OSUtils, "open_zip", real_open_zip)
    expected = _chalice_vendor_members(vendor, tmp_path)
    assert [_members(result) for result in results] == [expected, expected]


# --- Template covers the app -----------------------------------------------------------------


def test_every_pynamodb_table_is_declared_with_keys_indexes_ttl_pitr_and_sse(
    template: dict[str, Any], stage_env: dict[str, str]
) -> None:
    from pynamodb.attributes import TTLAttribute

    from chalicelib.domains import all_table_models
    from infra.template import camel

    tables = _resources(template, TABLE_TYPE)
    models = all_table_models()
    assert len(tables) == len(models)
    for model in models:
        props = tables[camel(model.__name__)]["Properties"]
        schema = model._get_schema()
        assert props["TableName"].startswith(stage_env["SYNAPSE_TABLE_PREFIX"] + "-")
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props["SSESpecification"] == {"SSEEnabled": True}
        keys = {(k["AttributeName"], k["KeyType"]) for k in props["KeySchema"]}
        assert keys == {(k["AttributeName"], k["KeyType"]) for k in schema["key_schema"]}
        assert props["KeySchema"][0]["KeyType"] == "HASH"
        indexes = {i["IndexName"] for i in props.get("GlobalSecondaryIndexes", [])}
        assert indexes == {i["index_name"] for i in schema["global_secondary_indexes"]}
        ttl = [a.attr_name for a in model.get_attributes().values() if isinstance(a, TTLAttribute)]
        if ttl:
            assert props["TimeToLiveSpecification"] == {"AttributeName": ttl[0], "Enabled": True}
        else:
            assert "TimeToLiveSpecification" not in props


def _app_event_sources() -> list[Any]:
    import app as application

    return list(application.app.event_sources)


def test_every_app_handler_is_a_function_with_its_trigger(template: dict[str, Any]) -> None:
    functions = {f["Properties"]["FunctionName"]: f for f in _zip_functions(template).values()}
    expected_types = {
        "ScheduledEventConfig": "Schedule",
        "S3EventConfig": "S3",
        "SQSEventConfig": "SQS",
        "CloudWatchEventConfig": "CloudWatchEvent",
    }
    sources = _app_event_sources()
    assert sources
    for source in sources:
        function = functions[f"synapsenet-{STAGE}-{source.name}"]
        assert function["Properties"]["Handler"] == source.handler_string
        events = list(function["Properties"]["Events"].values())
        assert [e["Type"] for e in events] == [expected_types[type(source).__name__]]
        if events[0]["Type"] == "S3":
            props = events[0]["Properties"]
            assert props["Bucket"] == {"Ref": "DataBucket"}
            if source.prefix:
                rules = props["Filter"]["S3Key"]["Rules"]
                assert {"Name": "prefix", "Value": source.prefix} in rules
        if events[0]["Type"] == "SQS":
            queue = events[0]["Properties"]["Queue"]["Fn::GetAtt"][0]
            assert template["Resources"][queue]["Type"] == "AWS::SQS::Queue"
    api = template["Resources"]["APIHandler"]["Properties"]
    assert api["Handler"] == "app.app"


def test_function_environment_names_the_stacks_own_resources(
    template: dict[str, Any], stage_env: dict[str, str]
) -> None:
    resources = template["Resources"]
    functions = _resources(template, FUNCTION_TYPE)
    table_env = set()
    for logical_id, function in functions.items():
        variables = function["Properties"]["Environment"]["Variables"]
        for name, value in variables.items():
            if name.endswith("_TABLE"):
                assert resources[value["Ref"]]["Type"] == TABLE_TYPE, (logical_id, name)
                table_env.add(name)
            if name.endswith("_QUEUE"):
                assert resources[value["Fn::GetAtt"][0]]["Type"] == "AWS::SQS::Queue"
        assert variables["DATA_BUCKET"] == {"Ref": "DataBucketName"}
        assert variables["MODELS_BUCKET"] == {"Ref": "ModelsBucketName"}
        assert variables["EVENT_BUS_NAME"] == {"Ref": "EventBus"}
        if "CodeUri" in function["Properties"]:
            assert variables["EXPLANATION_FUNCTION"] == {"Ref": "ExplainerFunction"}
            assert variables["SYNAPSE_EXPLANATION_BACKEND"] == "lambda"
    from chalicelib.domains import all_table_models

    assert table_env == {m.Meta.env_var for m in all_table_models()}
    assert resources["DataBucket"]["Properties"]["BucketName"] == {"Ref": "DataBucketName"}
    assert template["Parameters"]["DataBucketName"]["Default"] == stage_env["DATA_BUCKET"]
    assert resources["EventBus"]["Properties"]["Name"] == stage_env["EVENT_BUS_NAME"]
    explainer = resources["ExplainerFunction"]["Properties"]
    assert explainer["FunctionName"] == stage_env["EXPLANATION_FUNCTION"]


def test_each_function_has_its_own_role_without_wildcards(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    roles = [
        f["Properties"]["Role"]["Fn::GetAtt"][0]
        for f in _resources(template, FUNCTION_TYPE).values()
    ]
    assert len(roles) == len(set(roles))
    assert set(roles) == set(_resources(template, "AWS::IAM::Role"))
    for role in roles:
        for policy in resources[role]["Properties"]["Policies"]:
            for statement in policy["PolicyDocument"]["Statement"]:
                assert statement["Effect"] == "Allow"
                assert not any("*" in action for action in statement["Action"]), statement
                assert all(isinstance(r, dict) for r in statement["Resource"]), statement


def _granted(template: dict[str, Any], function: str) -> dict[str, set[str]]:
    """Service prefix → logical ids / parameters named in the function role's resources."""
    role = template["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0]
    granted: dict[str, set[str]] = {}
    for policy in template["Resources"][role]["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            service = statement["Action"][0].split(":")[0]
            for resource in statement["Resource"]:
                granted.setdefault(service, set()).update(_referenced(resource))
    return granted


def _referenced(resource: dict[str, Any]) -> set[str]:
    """Logical ids and parameters an ARN intrinsic refers to (``GetAtt``, ``Sub``)."""
    if "Fn::GetAtt" in resource:
        return {resource["Fn::GetAtt"][0]}
    return set(re.findall(r"\$\{([A-Za-z0-9]+)", resource["Fn::Sub"]))


def test_roles_follow_the_declared_access(template: dict[str, Any]) -> None:
    maintenance = _granted(template, "Maintenance")
    assert "s3" not in maintenance and "lambda" not in maintenance
    assert maintenance["dynamodb"] == {"EventOutboxTable"}
    api = _granted(template, "APIHandler")
    assert "ExplainerFunction" in api["lambda"]
    assert {"DataBucketName", "ModelsBucketName"} <= api["s3"]
    tables = set(_resources(template, TABLE_TYPE))
    assert tables <= api["dynamodb"]
    explainer = _granted(template, "ExplainerFunction")
    assert "ApiKeyTable" not in explainer["dynamodb"]
    assert "lambda" not in explainer
    worker = _granted(template, "ExplanationWorker")
    assert "ExplanationJobsQueue" in worker["sqs"]
    # Explanation guardrails: the monitor samples a dataset version and submits explanation jobs.
    monitor = _granted(template, "ExperimentMonitorWorker")
    assert "ExplanationJobsQueue" in monitor["sqs"] and "ExplainerFunction" in monitor["lambda"]
    assert {"ExplanationGuardrailTable", "ExplanationJobTable"} <= monitor["dynamodb"]
    assert "DataBucketName" in monitor["s3"] and "ApiKeyTable" not in monitor["dynamodb"]


def test_undeclared_function_stops_the_packaging() -> None:
    with pytest.raises(KeyError, match="infra/access.py"):
        access_module.access_for("a_new_handler")


def test_s3_subscription_outside_the_stack_is_refused() -> None:
    generator = SynapseSAMGenerator(None, None, {"synapse-prod-data": "DataBucket"})
    function = SimpleNamespace(resource_name="ingest")
    resource = SimpleNamespace(
        bucket="someone-elses-bucket",
        events=["s3:ObjectCreated:*"],
        prefix="incoming/",
        suffix=None,
        lambda_function=function,
        resource_name="ingest-s3event",
    )
    template = {"Resources": {"Ingest": {"Properties": {}}}}
    with pytest.raises(PackagingError, match="someone-elses-bucket"):
        generator._generate_s3bucketnotification(resource, template)
    resource.bucket = "synapse-prod-data"
    generator._generate_s3bucketnotification(resource, template)
    event = template["Resources"]["Ingest"]["Properties"]["Events"]["IngestS3event"]
    assert event["Properties"]["Bucket"] == {"Ref": "DataBucket"}


def test_queues_have_dead_letter_queues_and_async_functions_a_failure_queue(
    template: dict[str, Any],
) -> None:
    resources = template["Resources"]
    queues = _resources(template, "AWS::SQS::Queue")
    dlqs = {
        q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for q in queues.values()
        if "RedrivePolicy" in q["Properties"]
    }
    sources = set(queues) - dlqs - {"AsyncFailuresQueue"}
    assert sources
    assert all("RedrivePolicy" in queues[q]["Properties"] for q in sources)
    for function in _resources(template, FUNCTION_TYPE).values():
        events = list((function["Properties"].get("Events") or {}).values())
        asynchronous = any(e["Type"] in {"Schedule", "S3", "CloudWatchEvent"} for e in events)
        if asynchronous:
            target = function["Properties"]["DeadLetterQueue"]["TargetArn"]
            assert target == {"Fn::GetAtt": ["AsyncFailuresQueue", "Arn"]}
        for event in events:
            if event["Type"] == "SQS":
                queue = resources[event["Properties"]["Queue"]["Fn::GetAtt"][0]]
                timeout = function["Properties"]["Timeout"]
                assert queue["Properties"]["VisibilityTimeout"] >= timeout


def test_buckets_are_encrypted_private_and_the_data_bucket_versioned(
    template: dict[str, Any],
) -> None:
    buckets = _resources(template, "AWS::S3::Bucket")
    assert set(buckets) == {"DataBucket", "ModelsBucket"}
    for bucket in buckets.values():
        props = bucket["Properties"]
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert all(props["PublicAccessBlockConfiguration"].values())
        assert len(props["PublicAccessBlockConfiguration"]) == 4
    assert buckets["DataBucket"]["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}
    policies = _resources(template, "AWS::S3::BucketPolicy")
    assert {p["Properties"]["Bucket"]["Ref"] for p in policies.values()} == set(buckets)


def test_only_staging_prefixes_expire(template: dict[str, Any]) -> None:
    from chalicelib.dataversion.storage import (
        CAS_PREFIX,
        INCOMING_PREFIX,
        REJECTED_PREFIX,
        TMP_PREFIX,
    )

    buckets = _resources(template, "AWS::S3::Bucket")
    expiring = {
        name: {
            rule["Prefix"]: rule["ExpirationInDays"]
            for rule in bucket["Properties"]["LifecycleConfiguration"]["Rules"]
            if "ExpirationInDays" in rule
        }
        for name, bucket in buckets.items()
    }
    assert expiring == {
        "DataBucket": {TMP_PREFIX: 1, REJECTED_PREFIX: 30},
        "ModelsBucket": {"uploads/": 7},
    }
    live = {
        "DataBucket": [CAS_PREFIX, INCOMING_PREFIX],
        "ModelsBucket": ["artifacts/", "backgrounds/"],
    }
    for name, prefixes in live.items():
        for prefix in prefixes:
            assert not any(prefix.startswith(gone) for gone in expiring[name]), prefix


# --- The explanation function's image -------------------------------------------------------


def _handler_exists(dotted: str) -> bool:
    module, _, function = dotted.rpartition(".")
    spec = importlib.util.find_spec(module)
    tree = ast.parse(Path(spec.origin).read_text())
    return any(isinstance(n, ast.FunctionDef) and n.name == function for n in tree.body)


def test_explainer_is_an_image_function_whose_handler_exists(template: dict[str, Any]) -> None:
    props = template["Resources"]["ExplainerFunction"]["Properties"]
    assert props["PackageType"] == "Image"
    assert props["ImageUri"] == {"Ref": "ExplainerImageUri"}
    assert "ExplainerImageUri" in template["Parameters"]
    (command,) = props["ImageConfig"]["Command"]
    assert _handler_exists(command)
    assert props["Environment"]["Variables"]["SYNAPSE_EXPLANATION_BACKEND"] == "inprocess"


def test_dockerfile_matches_the_runtime_pins_and_handler() -> None:
    from infra.package import RUNTIME
    from infra.template import EXPLAINER_HANDLER

    dockerfile = (REPO / "layers" / "explainer" / "Dockerfile").read_text()
    base = re.search(r"^FROM public\.ecr\.aws/lambda/python:(\S+)$", dockerfile, re.M)
    assert base and f"python{base.group(1)}" == RUNTIME
    dev = (REPO / "requirements-dev.txt").read_text()
    for arg, package in (("CHALICE_VERSION", "chalice"), ("BOTO3_VERSION", "boto3")):
        pinned = re.search(rf"^{package}==(\S+)", dev, re.M).group(1)
        assert f"ARG {arg}={pinned}" in dockerfile
    assert f'CMD ["{EXPLAINER_HANDLER}"]' in dockerfile
    for source in re.findall(r"^COPY (\S+) ", dockerfile, re.M):
        assert (REPO / source).exists(), source


# --- make deploy ----------------------------------------------------------------------------


def _fake_tools(tmp_path: Path, sts_ok: bool) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sts = (
        "echo 123456789012; exit 0"
        if sts_ok
        else 'echo "Unable to locate credentials" >&2; exit 255'
    )
    (bin_dir / "aws").write_text(f'#!/bin/sh\nif [ "$1" = sts ]; then {sts}; fi\nexit 0\n')
    (bin_dir / "docker").write_text("#!/bin/sh\nexit 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", AWS_REGION="us-east-1", DRY_RUN="1")
    return env


def test_deploy_fails_fast_without_credentials(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", "infra/deploy.sh"],
        cwd=REPO,
        env=_fake_tools(tmp_path, sts_ok=False),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "no usable AWS credentials" in result.stderr
    assert "+ " not in result.stdout


def test_deploy_builds_pushes_and_deploys_with_the_image_uri(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", "infra/deploy.sh"],
        cwd=REPO,
        env={**_fake_tools(tmp_path, sts_ok=True), "IMAGE_TAG": "abc"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/synapsenet-explainer:abc"
    steps = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    order = ["-m infra.package", "docker build", "docker push", "cloudformation package"]
    order.append("cloudformation deploy")
    positions = [next(i for i, s in enumerate(steps) if word in s) for word in order]
    assert positions == sorted(positions)
    deploy = next(s for s in steps if "cloudformation deploy" in s)
    assert f"ExplainerImageUri={image}" in deploy
    assert "DataBucketName=synapse-prod-data-123456789012" in deploy
    assert f"-f layers/explainer/Dockerfile -t {image}" in next(
        s for s in steps if "docker build" in s
    )


def test_admin_key_bootstrap_issues_a_working_admin_token(aws: Any) -> None:
    from chalicelib.auth.service import AuthService
    from infra.admin_key import create_admin_key

    key_id, token = create_admin_key("ops@example.com")
    principal = AuthService().verify(token)
    assert principal.principal == "ops@example.com"
    assert principal.has_role("admin")
    assert [k.key_id for k in AuthService().list_keys()] == [key_id]
