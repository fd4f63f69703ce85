"""Template validation: cfn-lint on the SAM template and on its CloudFormation expansion.

cfn-lint 1.x checks a SAM template against SAM's schemas without expanding it, so it cannot see
what the SAM transform adds (the data bucket's notification configuration, the S3 and API Gateway
invoke permissions, SQS event source mappings) nor a circular dependency through them. So the
template is also expanded with ``aws-sam-translator`` (the library CloudFormation's
``AWS::Serverless`` transform is built on) and the result is linted as plain CloudFormation.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import re
from pathlib import Path
from typing import Any

PLACEHOLDER_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/synapsenet-explainer:validate"
PLACEHOLDER_CODE = "s3://synapsenet-artifacts/deployment.zip"


class _NoManagedPolicies:
    """The template names no managed policies (every role is explicit)."""

    def load(self) -> dict[str, str]:
        return {}


def expand_sam(template: dict[str, Any], region: str = "us-east-1") -> dict[str, Any]:
    """The plain CloudFormation template the ``AWS::Serverless-2016-10-31`` transform produces.

    Local ``CodeUri`` paths are replaced by an S3 URI, as ``aws cloudformation package`` does.
    """
    from samtranslator.translator.transform import transform

    document = copy.deepcopy(template)
    for resource in document["Resources"].values():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function" and "CodeUri" in properties:
            properties["CodeUri"] = PLACEHOLDER_CODE
        if resource["Type"] == "AWS::Serverless::LayerVersion":
            properties["ContentUri"] = PLACEHOLDER_CODE
    os.environ.setdefault("AWS_DEFAULT_REGION", region)  # see expansion_region()
    return transform(document, {"ExplainerImageUri": PLACEHOLDER_IMAGE}, _NoManagedPolicies())


def lint(path: Path, regions: list[str] | None = None) -> list[str]:
    """cfn-lint findings (errors, warnings; not informational) of the template at ``path``."""
    from cfnlint.api import ManualArgs, lint_file

    matches = lint_file(path, config=ManualArgs(regions=regions or ["us-east-1"]))
    return [
        f"{m.rule.id} {m.message} ({m.filename}:{m.linenumber})"
        for m in matches
        if m.rule.severity.lower() in ("error", "warning")
    ]


LINTERS = ("cfn-lint", "aws-sam-translator")


def linter_versions() -> list[str]:
    """``name==version`` of the Python, the linters and every library they require (their
    schema validation, graphs and YAML reading come from those)."""
    from importlib.metadata import PackageNotFoundError, requires, version

    names = list(LINTERS)
    for linter in LINTERS:
        for requirement in requires(linter) or []:
            if "extra ==" not in requirement:
                names.append(re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0])
    found = [f"python=={platform.python_version()}"]
    for name in dict.fromkeys(names):
        try:
            found.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} absent")
    return found


def expansion_region() -> str:
    """The region the SAM expansion runs in (:func:`expand_sam` keeps ``AWS_DEFAULT_REGION`` when
    set): its partition (``aws``, ``aws-cn``, ``aws-us-gov``...) is written into the ARNs the
    expansion generates, which the second lint reads."""
    return os.environ.get("AWS_DEFAULT_REGION", "us-east-1")


def clean_marker(template_path: Path, cache: Path) -> Path:
    """Where :func:`validate` notes that a template was found clean: named after the template's
    bytes, the linters' and their libraries' versions (:func:`linter_versions`), the expansion's
    region (:func:`expansion_region`) and this module's code (anything that could change the
    findings)."""
    digest = hashlib.sha256(template_path.read_bytes())
    parts = (*linter_versions(), expansion_region(), Path(__file__).read_text(encoding="utf-8"))
    for part in parts:
        digest.update(b"\0" + part.encode())
    return cache / f"cfn-lint-clean-{digest.hexdigest()[:32]}"


def lint_configuration() -> list[Path]:
    """The cfn-lint configuration files a lint reads: ``.cfnlintrc`` (or ``.yaml``/``.yml``) in
    the home directory and in the current one, as cfn-lint looks them up."""
    names = (".cfnlintrc", ".cfnlintrc.yaml", ".cfnlintrc.yml")
    return [
        base / name
        for base in (Path.home(), Path.cwd())
        for name in names
        if (base / name).is_file()
    ]


def validate(template_path: Path, cache: Path | None = None) -> list[str]:
    """Lints the SAM template and its expansion (written next to it as ``*.expanded.json``).

    With ``cache``, a template whose exact bytes were found clean before by the same linters is
    not linted again (about 8 s); findings are never cached, so a failing template is always
    linted and reported afresh. Nor is anything remembered or recalled while a cfn-lint
    configuration file is present (:func:`lint_configuration`): it can add rules, from files
    of their own, that no key would see change.
    """
    marker = None if cache is None or lint_configuration() else clean_marker(template_path, cache)
    if marker is not None and marker.is_file():
        return []
    findings = _validate(template_path)
    if marker is not None and not findings:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(template_path.name + "\n")
    return findings


def _validate(template_path: Path) -> list[str]:
    findings = lint(template_path)
    template = json.loads(template_path.read_text())
    expanded_path = template_path.with_suffix(".expanded.json")
    expanded_path.write_text(json.dumps(expand_sam(template), indent=2, sort_keys=True) + "\n")
    findings += lint(expanded_path)
    return findings
