"""``python -m infra.package``: builds the deployable artifacts of a stage, offline.

1. Sets the process environment to the stage's (``.chalice/config.json``), so that ``app.py`` and
   the PynamoDB models see the names the deployed functions will see.
2. Installs ``requirements.txt`` for the Lambda runtime (``python3.12``, manylinux x86_64 wheels
   only) into a cache, and stages a copy of the Chalice project whose ``vendor/`` holds them.
3. Runs Chalice's packager on it (``deployment.zip`` + ``sam.json``, see
   :mod:`infra.chalice_build`), then merges the result with the resources Chalice does not manage
   into ``template.json`` (:mod:`infra.template`).
4. Measures every artifact (the zip and any layer; with ``--image`` also the explainer image's
   site-packages, installed the same way from both requirement files) and prints the sizes; exits
   non-zero if the zip function would exceed Lambda's 250 MB.

Why python3.12 and not 3.11: numpy 2.4 and scipy 1.17 (and scikit-learn 1.9) publish only
manylinux_2_27+ wheels; the python3.11 Lambda runtime is Amazon Linux 2 (glibc 2.26) and cannot
load them. The python3.12 runtime is Amazon Linux 2023 (glibc 2.34).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from infra.cache_files import sweep_stale

REPO = Path(__file__).resolve().parent.parent
RUNTIME = "python3.12"
PYTHON_VERSION = "3.12"
ABI = "cp312"
PLATFORMS = ("manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux2014_x86_64")
LIGHT_REQUIREMENTS = REPO / "requirements.txt"
EXPLAINER_REQUIREMENTS = REPO / "layers" / "explainer" / "requirements.txt"
DEV_REQUIREMENTS = REPO / "requirements-dev.txt"
STAGED_FILES = ("app.py", ".chalice/config.json")
STAGED_DIRS = ("chalicelib",)
# Variables that would make the packaging process see another environment's names.
_FOREIGN_ENV = re.compile(r"^(SYNAPSE_|AWS_ENDPOINT_URL)|(_TABLE|_BUCKET|_QUEUE|_FUNCTION)$")


def shared_cache() -> Path:
    """A build cache outside the working tree, shared by every clone on this machine:
    ``$SYNAPSE_BUILD_CACHE``, else ``$XDG_CACHE_HOME/synapsenet`` (``~/.cache/synapsenet``).

    Everything put in it is named after what it was built from (requirement files, platforms,
    template bytes and tool versions), so a fresh clone either finds exactly its own inputs' build
    or builds it.
    """
    if os.environ.get("SYNAPSE_BUILD_CACHE"):
        return Path(os.environ["SYNAPSE_BUILD_CACHE"])
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return home / "synapsenet"


def stage_environment(stage: str, project: Path = REPO) -> dict[str, str]:
    """The stage's environment variables: the global ones overridden by the stage's."""
    config = json.loads((project / ".chalice" / "config.json").read_text())
    if stage not in config.get("stages", {}):
        raise SystemExit(f"no stage {stage!r} in .chalice/config.json")
    return {
        **config.get("environment_variables", {}),
        **config["stages"][stage].get("environment_variables", {}),
    }


def apply_environment(env: dict[str, str], region: str) -> None:
    """Replaces every app-related variable of this process with the stage's."""
    for key in list(os.environ):
        if _FOREIGN_ENV.search(key) or key in ("EVENT_BUS_NAME", "EVENT_SOURCE"):
            del os.environ[key]
    os.environ.update(env)
    os.environ["AWS_DEFAULT_REGION"] = region
    os.environ["AWS_REGION"] = region


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()[:16]


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def _platform_args() -> list[str]:
    args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", PYTHON_VERSION]
    args += ["--abi", ABI]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return args


def sdk_pins(path: Path = DEV_REQUIREMENTS) -> list[str]:
    """The tested ``boto3`` pin (from ``requirements-dev.txt``).

    pynamodb depends on botocore, so the package always carries a botocore, and ``/var/task``
    comes before the runtime's own SDK on ``sys.path``: the runtime's boto3 would then run on our
    botocore. Shipping the tested boto3 too keeps boto3, botocore and s3transfer a matching set.
    """
    return [
        line.split("#", 1)[0].strip()
        for line in path.read_text().splitlines()
        if re.match(r"^boto3\s*==", line.strip())
    ]


def install_for_lambda(
    requirements: list[Path],
    target: Path,
    wheelhouse: Path,
    extra: list[str] | None = None,
    bytecode: bool = False,
) -> None:
    """``pip install --target`` of ``requirements`` with Lambda-compatible wheels only.

    ``bytecode`` keeps pip's ``.pyc`` compilation (what ``pip install`` in the image does); the
    zip is built without it, as Chalice builds it.

    Requirements published only as sdists (``lime``) are built into ``wheelhouse`` first; that
    works for pure-Python projects (``py3-none-any``), and pip refuses anything else.
    """
    wheelhouse.mkdir(parents=True, exist_ok=True)
    req_args = [arg for path in requirements for arg in ("-r", str(path))]
    for _ in range(5):
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        result = _pip(
            "install",
            "--quiet",
            *([] if bytecode else ["--no-compile"]),
            "--target",
            str(tmp),
            "--find-links",
            str(wheelhouse),
            *_platform_args(),
            *req_args,
            *(extra or []),
        )
        if result.returncode == 0:
            try:
                tmp.rename(target)
            except OSError:  # another build installed the same content meanwhile
                if not target.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
            return
        shutil.rmtree(tmp, ignore_errors=True)
        missing = re.search(r"No matching distribution found for (\S+)", result.stderr)
        if not missing:
            raise SystemExit(f"pip install failed:\n{result.stderr[-3000:]}")
        built = _pip("wheel", "--quiet", "--no-deps", "-w", str(wheelhouse), missing.group(1))
        if built.returncode != 0:
            raise SystemExit(f"no Lambda wheel for {missing.group(1)}:\n{built.stderr[-2000:]}")
    raise SystemExit("pip install kept failing; see the messages above")


def cached_install(
    requirements: list[Path], cache: Path, label: str, bytecode: bool = False
) -> Path:
    """Installs ``requirements`` (+ :func:`sdk_pins`) for the Lambda runtime, once per content
    hash (under ``cache``)."""
    extra = sdk_pins()
    contents = [p.read_bytes() for p in requirements]
    key = _digest(
        RUNTIME.encode(), *contents, " ".join([*PLATFORMS, *extra, str(bytecode)]).encode()
    )
    target = cache / f"{label}-{RUNTIME}-{key}"
    if not target.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        # install_for_lambda's temporary directories (``<target name>.<random>``) left by killed
        # builds; the key is 16 hex digits, so no finished install matches.
        sweep_stale(cache, f"{label}-{RUNTIME}-{'[0-9a-f]' * 16}.*")
        names = ", ".join(str(p.relative_to(REPO)) for p in requirements)
        print(f"installing {names} for {RUNTIME} into {target}")
        install_for_lambda(requirements, target, cache / "wheelhouse", extra, bytecode)
    return target


def stage_project(project: Path, stage_dir: Path, vendor: Path) -> None:
    """A Chalice project with the app's code and config, and the dependencies as ``vendor/``.

    There is no ``requirements.txt`` in it, so Chalice builds no dependencies itself (it would
    pick wheels for the interpreter running it, not for the Lambda runtime).
    """
    stage_dir.mkdir(parents=True, exist_ok=True)
    for name in STAGED_DIRS:
        shutil.rmtree(stage_dir / name, ignore_errors=True)
        shutil.copytree(
            project / name, stage_dir / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    for name in STAGED_FILES:
        (stage_dir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project / name, stage_dir / name)
    link = stage_dir / "vendor"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(vendor.resolve(), target_is_directory=True)


def check_explainer_entrypoint(project: Path) -> None:
    """Fails unless the explanation function's handler exists in the code."""
    from infra.template import EXPLAINER_HANDLER

    module, _, function = EXPLAINER_HANDLER.rpartition(".")
    path = project / (module.replace(".", "/") + ".py")
    if not path.is_file():
        raise SystemExit(f"the explanation function's module {module} does not exist ({path})")
    tree = ast.parse(path.read_text())
    if not any(isinstance(n, ast.FunctionDef) and n.name == function for n in tree.body):
        raise SystemExit(f"{module} defines no {function}(event, context)")


def build(stage: str, out: Path, cache: Path, region: str) -> dict[str, Any]:
    """Builds ``deployment.zip``, ``sam.json`` and ``template.json`` into ``out``."""
    env = stage_environment(stage)
    apply_environment(env, region)
    from chalicelib.domains import all_table_models
    from infra.chalice_build import package_chalice_app, seed_deployment_package, zip_dependencies
    from infra.template import StackSettings, build_template

    check_explainer_entrypoint(REPO)
    vendor = cached_install([LIGHT_REQUIREMENTS], cache, "vendor")
    stage_dir = out / ".project"
    stage_project(REPO, stage_dir, vendor)
    dependencies = zip_dependencies(vendor, cache)
    seed_deployment_package(stage_dir, stage, dependencies)
    out.mkdir(parents=True, exist_ok=True)
    buckets = {env["DATA_BUCKET"]: "DataBucket", env["MODELS_BUCKET"]: "ModelsBucket"}
    chalice = package_chalice_app(stage_dir, stage, out, buckets)
    template = build_template(chalice, all_table_models(), StackSettings(stage, RUNTIME))
    (out / "template.json").write_text(json.dumps(template, indent=2, sort_keys=True) + "\n")
    return template


def measure(out: Path, cache: Path, image: bool) -> list[Any]:
    """Measures the zips in ``out`` and, if ``image``, the explainer image's site-packages."""
    from infra.sizes import measure_tree, measure_zip

    artifacts = [measure_zip(path) for path in sorted(out.glob("*.zip"))]
    if image:
        requirements = [LIGHT_REQUIREMENTS, EXPLAINER_REQUIREMENTS]
        site = cached_install(requirements, cache, "explainer-site", bytecode=True)
        artifacts.append(measure_tree(site, "explainer image: /var/task (deps + .pyc)"))
    return artifacts


def report(out: Path, artifacts: list[Any]) -> bool:
    """Prints the size table, writes ``sizes.json``; returns whether everything fits."""
    from infra.sizes import (
        MB,
        ZIP_UNZIPPED_LIMIT,
        format_parts,
        format_table,
        largest_entries,
        zip_function_total,
    )

    total = zip_function_total(artifacts)
    print(format_table(artifacts))
    print(
        f"zip functions (package + layers): {total / MB:.1f} MB of "
        f"{ZIP_UNZIPPED_LIMIT / MB:.0f} MB unzipped ({100 * total / ZIP_UNZIPPED_LIMIT:.0f}%)"
    )
    for artifact in artifacts:
        if artifact.parts:
            print(format_parts(artifact))
    deployment = out / "deployment.zip"
    if deployment.exists():
        biggest = ", ".join(f"{n} {s / MB:.1f}" for n, s in largest_entries(deployment))
        print(f"largest in deployment.zip (MB): {biggest}")
    fits = total <= ZIP_UNZIPPED_LIMIT and all(a.within_limit for a in artifacts)
    summary = {
        "runtime": RUNTIME,
        "zip_function_unzipped_bytes": total,
        "zip_function_limit_bytes": ZIP_UNZIPPED_LIMIT,
        "artifacts": [a.as_dict() for a in artifacts],
        "fits": fits,
    }
    (out / "sizes.json").write_text(json.dumps(summary, indent=2) + "\n")
    return fits


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="prod")
    parser.add_argument("--out", type=Path, default=REPO / "dist")
    parser.add_argument("--cache", type=Path, default=REPO / "dist" / ".cache")
    parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    parser.add_argument(
        "--image",
        action="store_true",
        help="also install the explainer image's dependencies (~800 MB) and measure them",
    )
    parser.add_argument(
        "--lint", action="store_true", help="cfn-lint the template and its SAM expansion"
    )
    args = parser.parse_args(argv)
    build(args.stage, args.out.resolve(), args.cache.resolve(), args.region)
    fits = report(args.out, measure(args.out, args.cache.resolve(), args.image))
    print(f"template: {args.out / 'template.json'}")
    findings = lint_template(args.out / "template.json") if args.lint else []
    if not fits:
        print("an artifact exceeds its Lambda limit", file=sys.stderr)
    return 0 if fits and not findings else 1


def lint_template(path: Path) -> list[str]:
    """Runs :func:`infra.validate.validate` and prints the outcome."""
    from infra.validate import validate

    findings = validate(path)
    for finding in findings:
        print(f"cfn-lint: {finding}", file=sys.stderr)
    print("cfn-lint: template and SAM expansion clean" if not findings else "cfn-lint: FAILED")
    return findings


if __name__ == "__main__":
    sys.exit(main())
