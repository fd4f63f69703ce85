"""Runs ``chalice package`` (CloudFormation/SAM format) in-process, with one addition.

``chalice package`` refuses apps with ``@app.on_s3_event`` because CloudFormation cannot change the
notifications of a bucket created elsewhere. Our data bucket is created in the same template, and
SAM's ``S3`` event source supports exactly that case: SAM adds the bucket's
``NotificationConfiguration`` and the ``lambda:InvokeFunction`` permission for S3. So this module
uses Chalice's own packager (``chalice.package``: the same resource graph, deployment zip, API
Gateway swagger and SAM generator the CLI uses) and only implements the S3 subscription that the
stock generator rejects. The handler keeps receiving S3's native notification event, the shape
the local stack's S3 pump delivers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chalice.cli.factory import CLIFactory
from chalice.deploy import models
from chalice.deploy.appgraph import ApplicationGraphBuilder, DependencyBuilder
from chalice.deploy.deployer import create_build_stage
from chalice.deploy.packager import LambdaDeploymentPackager
from chalice.deploy.swagger import CFNSwaggerGenerator
from chalice.package import (
    AppPackager,
    CompositePostProcessor,
    JSONTemplateSerializer,
    PackageOptions,
    ResourceBuilder,
    SAMCodeLocationPostProcessor,
    SAMTemplateGenerator,
)
from chalice.utils import UI, OSUtils, to_cfn_resource_name

from infra.cache_files import sweep_stale


class PackagingError(Exception):
    """The app cannot be packaged as declared (the message says what to change)."""


@dataclass
class ChaliceOutput:
    """What the Chalice step produced.

    Attributes:
        template: The SAM template Chalice generated (``CodeUri: ./deployment.zip``).
        functions: Logical id of every Chalice-managed function → its Chalice name
            (``APIHandler`` → ``api_handler``, ``Maintenance`` → ``maintenance``).
        app_name: Chalice ``app_name``.
        environment: The stage's environment variables (global merged with the stage's).
    """

    template: dict[str, Any]
    functions: dict[str, str] = field(default_factory=dict)
    app_name: str = ""
    environment: dict[str, str] = field(default_factory=dict)


class SynapseSAMGenerator(SAMTemplateGenerator):
    """Chalice's SAM generator, plus S3 subscriptions on buckets the merged template creates.

    Args:
        config: Chalice config of the stage.
        options: Chalice package options.
        bucket_logical_ids: Bucket name → logical id of the ``AWS::S3::Bucket`` that the merged
            template declares for it. A subscription to any other bucket is refused.
    """

    def __init__(
        self, config: Any, options: PackageOptions, bucket_logical_ids: dict[str, str]
    ) -> None:
        super().__init__(config, options)
        self.bucket_logical_ids = bucket_logical_ids
        self.functions: dict[str, str] = {}

    def _generate_lambdafunction(self, resource: models.LambdaFunction, template: dict) -> None:
        super()._generate_lambdafunction(resource, template)
        self.functions[to_cfn_resource_name(resource.resource_name)] = resource.resource_name

    def _generate_restapi(self, resource: models.RestAPI, template: dict) -> None:
        # Chalice renames the API's function to ``APIHandler`` here; follow it.
        super()._generate_restapi(resource, template)
        name = resource.lambda_function.resource_name
        self.functions.pop(to_cfn_resource_name(name), None)
        self.functions["APIHandler"] = name

    def _generate_s3bucketnotification(
        self, resource: models.S3BucketNotification, template: dict
    ) -> None:
        bucket = self.bucket_logical_ids.get(resource.bucket)
        if bucket is None:
            raise PackagingError(
                f"@app.on_s3_event(bucket={resource.bucket!r}) names a bucket this stack does not "
                f"create; known buckets: {sorted(self.bucket_logical_ids)}. S3 notifications can "
                "only be declared on buckets created in the same template."
            )
        function_cfn = template["Resources"][
            to_cfn_resource_name(resource.lambda_function.resource_name)
        ]
        event_name = self._register_cfn_resource_name(resource.resource_name)
        properties: dict[str, Any] = {"Bucket": {"Ref": bucket}, "Events": resource.events}
        rules = [
            {"Name": name, "Value": value}
            for name, value in (("prefix", resource.prefix), ("suffix", resource.suffix))
            if value
        ]
        if rules:
            properties["Filter"] = {"S3Key": {"Rules": rules}}
        function_cfn["Properties"]["Events"] = {
            event_name: {"Type": "S3", "Properties": properties}
        }


def _vendor_files(vendor: Path) -> list[tuple[Path, str]]:
    """Every file of ``vendor`` with its name in the zip, as Chalice walks a ``vendor/``."""
    return [
        (Path(root) / filename, str((Path(root) / filename).relative_to(vendor)))
        for root, _, filenames in os.walk(vendor, followlinks=True)
        for filename in filenames
    ]


def _signature(files: list[tuple[Path, str]]) -> str:
    """A digest of each file's name, size, modification time and mode (what a reinstall or
    any edit changes): a stat of each file, not a read of ~200 MB."""
    digest = hashlib.sha256()
    for full, name in sorted(files, key=lambda pair: pair[1]):
        stat = full.stat()
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_mode}\n".encode())
    return digest.hexdigest()[:16]


def _holds_exactly(path: Path, names: set[str]) -> bool:
    """Whether the zip at ``path`` is readable and lists exactly ``names``."""
    try:
        with zipfile.ZipFile(path) as archive:
            return set(archive.namelist()) == names
    except (OSError, zipfile.BadZipFile):
        return False


def zip_dependencies(vendor: Path, cache: Path) -> Path:
    """A deflated zip of ``vendor``'s files, as Chalice adds a project's ``vendor/`` to its
    deployment zip (every file, symlinks followed, paths relative to ``vendor``, Chalice's
    normalised times and permissions), kept in ``cache``.

    The zip is named after ``vendor`` and the name, size, time and mode of every file in it,
    so a vendor directory reinstalled or edited gets a new zip. One that is cut short or does
    not list exactly those files is written again. Each build writes its own temporary file,
    flushed to disk before it atomically takes the zip's name, so builds sharing the cache see a
    whole file or none; temporary files a killed build left a day ago or more are deleted.
    """
    files = _vendor_files(vendor)
    target = cache / f"{vendor.name}-{_signature(files)}.zip"
    if _holds_exactly(target, {name for _, name in files}):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    sweep_stale(cache, f"{vendor.name}-*.zip.*.tmp")  # left by builds killed mid-write
    handle, partial = tempfile.mkstemp(prefix=f"{target.name}.", suffix=".tmp", dir=cache)
    os.close(handle)
    try:
        with OSUtils().open_zip(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for full, name in files:
                archive.write(full, name)
        with open(partial, "rb") as written:
            os.fsync(written.fileno())
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return target


def seed_deployment_package(project_dir: Path, stage: str, dependencies_zip: Path) -> Path | None:
    """Puts the zip Chalice's packager would build for ``project_dir`` where that packager looks
    for a previous build of the same sources (``.chalice/deployments/<hash>-<python>.zip``, the
    hash of the app's files and ``vendor/``), so ``package_chalice_app`` reuses it.

    The zip is a copy of ``dependencies_zip`` (:func:`zip_dependencies`, made once per
    dependency set) with the app's files added by Chalice's own list of them
    (``app.py``, ``chalicelib/``, Chalice's runtime): deflating ~200 MB of numpy and scipy again
    for every change to the app was most of a package's time.

    Args:
        project_dir: The staged Chalice project (its ``vendor/`` holds the dependencies).
        stage: Chalice stage name.
        dependencies_zip: The zip of ``project_dir / "vendor"``.

    Returns:
        The seeded zip; ``None`` for a stage with Chalice's automatic layer, which is not seeded
        (Chalice builds its app zip and ``layer-deployment.zip`` itself).
    """
    config = CLIFactory(project_dir=str(project_dir)).create_config_obj(chalice_stage_name=stage)
    if config.automatic_layer:
        return None
    packager = LambdaDeploymentPackager(
        OSUtils(),
        None,
        UI(),
        architecture=config.lambda_architecture,  # type: ignore[arg-type]
    )
    target = Path(
        packager.deployment_package_filename(str(project_dir), config.lambda_python_version)
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".seed")
    shutil.copyfile(dependencies_zip, partial)
    with OSUtils().open_zip(str(partial), "a", zipfile.ZIP_DEFLATED) as archive:
        for full_path, zip_path in packager._iter_app_filenames(str(project_dir)):
            archive.write(full_path, zip_path)
    os.replace(partial, target)
    return target


def package_chalice_app(
    project_dir: Path, stage: str, out_dir: Path, bucket_logical_ids: dict[str, str]
) -> ChaliceOutput:
    """Packages the Chalice app of ``project_dir`` for ``stage`` into ``out_dir``.

    Writes ``deployment.zip`` (and ``layer-deployment.zip`` if the stage uses Chalice's automatic
    layer) and ``sam.json``, exactly as ``chalice package --stage <stage> <out_dir>`` does.

    Args:
        project_dir: A Chalice project (``app.py``, ``chalicelib/``, ``.chalice/config.json``).
        stage: Chalice stage name.
        out_dir: Output directory.
        bucket_logical_ids: See :class:`SynapseSAMGenerator`.
    """
    factory = CLIFactory(project_dir=str(project_dir))
    config = factory.create_config_obj(chalice_stage_name=stage)
    options = factory.create_package_options()
    osutils = OSUtils()
    generator = SynapseSAMGenerator(config, options, bucket_logical_ids)
    packager = AppPackager(
        generator,
        ResourceBuilder(
            ApplicationGraphBuilder(),
            DependencyBuilder(),
            create_build_stage(osutils, UI(), CFNSwaggerGenerator(), config),
        ),
        CompositePostProcessor([SAMCodeLocationPostProcessor(osutils=osutils)]),
        JSONTemplateSerializer(),
        osutils,
    )
    packager.package_app(config, str(out_dir), stage)
    template = json.loads((out_dir / "sam.json").read_text())
    return ChaliceOutput(
        template=template,
        functions=dict(generator.functions),
        app_name=config.app_name,
        environment=dict(config.environment_variables),
    )
