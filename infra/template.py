"""The deployable template: Chalice's SAM template merged with what Chalice does not manage.

Added here, all derived from the code rather than listed by hand:

* one ``AWS::DynamoDB::Table`` per registered PynamoDB model (:func:`all_table_models`, the list
  the local bootstrap and the tests create): keys, attribute definitions, GSIs/LSIs, TTL for a
  ``TTLAttribute``, on-demand billing, point-in-time recovery, server-side encryption;
* the data bucket (versioned) and the models bucket: encrypted, public access blocked,
  TLS-only bucket policies; the data bucket is where ``@app.on_s3_event`` subscriptions go;
* the EventBridge bus; one SQS queue with a dead-letter queue per ``*_QUEUE`` stage variable,
  and a queue for failed asynchronous invocations (schedule, S3, explanation jobs);
* the explanation function (container image, ``ExplainerImageUri`` parameter);
* a log group and a least-privilege role per function (see :mod:`infra.access`).

Names the functions read from the environment point at these resources (``Ref``/``GetAtt``), so
a function's ``EXPERIMENTS_TABLE`` is the table the stack created, by construction.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from infra.access import (
    EXPLAINER,
    Inventory,
    access_for,
    policy_document,
    role_resource,
)
from infra.chalice_build import ChaliceOutput, PackagingError

EXPLAINER_HANDLER = "chalicelib.explainability.handlers.explainer_function_handler"
ASYNC_EVENT_TYPES = {"Schedule", "S3", "CloudWatchEvent", "EventBridgeRule", "SNS"}
LOG_RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827]
QUEUE_MAX_RECEIVES = 5
RETAIN = {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}


@dataclass(frozen=True)
class StackSettings:
    """Inputs of the merge besides Chalice's output.

    Attributes:
        stage: Chalice stage (``prod``).
        runtime: Lambda runtime of the zip functions (``python3.12``).
        architecture: ``x86_64`` (the wheels in the package are built for it).
    """

    stage: str
    runtime: str
    architecture: str = "x86_64"


def camel(name: str) -> str:
    """``EXPLANATION_JOBS_QUEUE`` / ``api_handler`` → ``ExplanationJobsQueue`` / ``ApiHandler``."""
    parts = re.split(r"[^A-Za-z0-9]+", name)
    return "".join(p[:1].upper() + (p[1:].lower() if p.isupper() else p[1:]) for p in parts)


def _require(env: dict[str, str], name: str) -> str:
    value = env.get(name)
    if not value:
        raise PackagingError(f"the stage's environment_variables must set {name}")
    return value


# --- DynamoDB ---------------------------------------------------------------------------------


def _key_schema(keys: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    ordered = sorted(keys, key=lambda k: 0 if k["KeyType"] == "HASH" else 1)
    return [{"AttributeName": k["AttributeName"], "KeyType": k["KeyType"]} for k in ordered]


def _index(index: dict[str, Any]) -> dict[str, Any]:
    projection = {"ProjectionType": index["projection"]["ProjectionType"]}
    if index["projection"].get("NonKeyAttributes"):
        projection["NonKeyAttributes"] = list(index["projection"]["NonKeyAttributes"])
    return {
        "IndexName": index["index_name"],
        "KeySchema": _key_schema(index["key_schema"]),
        "Projection": projection,
    }


def _ttl_attribute(model: Any) -> str | None:
    from pynamodb.attributes import TTLAttribute

    for attribute in model.get_attributes().values():
        if isinstance(attribute, TTLAttribute):
            return str(attribute.attr_name)
    return None


def table_resource(model: Any) -> dict[str, Any]:
    """The ``AWS::DynamoDB::Table`` of one PynamoDB model."""
    schema = model._get_schema()
    definitions: dict[str, str] = {}
    for item in schema["attribute_definitions"]:
        definitions[item["AttributeName"]] = item["AttributeType"]
    properties: dict[str, Any] = {
        "TableName": model.Meta.table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": kind} for name, kind in definitions.items()
        ],
        "KeySchema": _key_schema(schema["key_schema"]),
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "SSESpecification": {"SSEEnabled": True},
    }
    if schema.get("global_secondary_indexes"):
        properties["GlobalSecondaryIndexes"] = [
            _index(i) for i in schema["global_secondary_indexes"]
        ]
    if schema.get("local_secondary_indexes"):
        properties["LocalSecondaryIndexes"] = [_index(i) for i in schema["local_secondary_indexes"]]
    ttl = _ttl_attribute(model)
    if ttl:
        properties["TimeToLiveSpecification"] = {"AttributeName": ttl, "Enabled": True}
    return {"Type": "AWS::DynamoDB::Table", **RETAIN, "Properties": properties}


def model_domain(model: Any) -> str:
    """``chalicelib.abtesting.repository`` → ``abtesting`` (a table may name its own grant
    domain in ``Meta.grant_domain``: core's reference pins are only the API's)."""
    declared = getattr(getattr(model, "Meta", None), "grant_domain", None)
    if declared:
        return str(declared)
    parts = model.__module__.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "chalicelib" else parts[0]


def add_tables(template: dict[str, Any], models: Iterable[Any], inventory: Inventory) -> dict:
    """Adds a table per model; returns ``{env var: {"Ref": table}}`` for the functions."""
    env: dict[str, Any] = {}
    resources = template["Resources"]
    for model in models:
        logical_id = camel(model.__name__)
        if logical_id in resources:
            raise PackagingError(f"two resources would be called {logical_id}")
        resources[logical_id] = table_resource(model)
        inventory.tables.setdefault(model_domain(model), []).append(logical_id)
        env_var = getattr(model.Meta, "env_var", None)
        if env_var:
            env[env_var] = {"Ref": logical_id}
    return env


# --- S3, EventBridge, SQS ---------------------------------------------------------------------


# Staging prefixes whose objects are never referenced once their write finished or failed:
# bucket logical id → prefix → days to keep.
STAGING_EXPIRY = {
    # Inline dataset content being hashed (deleted after the copy into cas/; left by crashes),
    # and incoming files that could not become a version (kept a month for inspection).
    "DataBucket": {"tmp/": 1, "rejected/": 30},
    # Presigned model-artifact uploads; registration copies them to artifacts/.
    "ModelsBucket": {"uploads/": 7},
}


def _bucket(name_param: str, versioned: bool, expire: dict[str, int]) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [
        {
            "Id": "abort-incomplete-multipart-uploads",
            "Status": "Enabled",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
        }
    ]
    rules += [
        {
            "Id": f"expire-{prefix.strip('/')}",
            "Status": "Enabled",
            "Prefix": prefix,
            "ExpirationInDays": days,
        }
        for prefix, days in expire.items()
    ]
    properties: dict[str, Any] = {
        "BucketName": {"Ref": name_param},
        "BucketEncryption": {
            "ServerSideEncryptionConfiguration": [
                {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
            ]
        },
        "PublicAccessBlockConfiguration": {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        },
        "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
    }
    if versioned:
        properties["VersioningConfiguration"] = {"Status": "Enabled"}
        rules.append(
            {
                "Id": "expire-noncurrent-versions",
                "Status": "Enabled",
                "NoncurrentVersionExpiration": {"NoncurrentDays": 90},
            }
        )
    properties["LifecycleConfiguration"] = {"Rules": rules}
    return {"Type": "AWS::S3::Bucket", **RETAIN, "Properties": properties}


def _tls_only_policy(bucket: str) -> dict[str, Any]:
    return {
        "Type": "AWS::S3::BucketPolicy",
        "Properties": {
            "Bucket": {"Ref": bucket},
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "DenyInsecureTransport",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:*",
                        "Resource": [
                            {"Fn::GetAtt": [bucket, "Arn"]},
                            {"Fn::Sub": f"${{{bucket}.Arn}}/*"},
                        ],
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    }
                ],
            },
        },
    }


def add_buckets(template: dict[str, Any]) -> None:
    """The data bucket (versioned) and the models bucket, with TLS-only policies."""
    resources = template["Resources"]
    resources["DataBucket"] = _bucket(
        "DataBucketName", versioned=True, expire=STAGING_EXPIRY["DataBucket"]
    )
    resources["DataBucketPolicy"] = _tls_only_policy("DataBucket")
    resources["ModelsBucket"] = _bucket(
        "ModelsBucketName", versioned=False, expire=STAGING_EXPIRY["ModelsBucket"]
    )
    resources["ModelsBucketPolicy"] = _tls_only_policy("ModelsBucket")


def _queue(name: Any, retention_seconds: int, extra: dict[str, Any] | None = None) -> dict:
    properties = {
        "QueueName": name,
        "MessageRetentionPeriod": retention_seconds,
        "SqsManagedSseEnabled": True,
        **(extra or {}),
    }
    return {"Type": "AWS::SQS::Queue", "Properties": properties}


def add_queues(
    template: dict[str, Any], env: dict[str, str], consumer_timeouts: dict[str, int]
) -> dict[str, str]:
    """One queue + dead-letter queue per ``*_QUEUE`` stage variable.

    Args:
        template: The template being built.
        env: The stage's environment variables.
        consumer_timeouts: Queue name → timeout of the function it triggers (SQS requires a
            visibility timeout of at least that; AWS recommends six times).

    Returns:
        ``{env var: queue logical id}``.
    """
    queues: dict[str, str] = {}
    resources = template["Resources"]
    for env_var, name in sorted(env.items()):
        if not env_var.endswith("_QUEUE"):
            continue
        logical_id = camel(env_var)
        visibility = min(43200, max(60, 6 * consumer_timeouts.get(name, 30)))
        resources[f"{logical_id}DLQ"] = _queue(f"{name}-dlq", 1_209_600)
        resources[logical_id] = _queue(
            name,
            345_600,
            {
                "VisibilityTimeout": visibility,
                "RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": [f"{logical_id}DLQ", "Arn"]},
                    "maxReceiveCount": QUEUE_MAX_RECEIVES,
                },
            },
        )
        queues[env_var] = logical_id
    return queues


# --- Functions --------------------------------------------------------------------------------


def _sqs_queue_name(queue: Any) -> str | None:
    if isinstance(queue, dict) and "Fn::Sub" in queue:
        return str(queue["Fn::Sub"]).rsplit(":", 1)[-1]
    if isinstance(queue, str) and queue.startswith("arn:"):
        return queue.rsplit(":", 1)[-1]
    return None


def _log_group(name: str) -> dict[str, Any]:
    return {
        "Type": "AWS::Logs::LogGroup",
        "Properties": {
            "LogGroupName": f"/aws/lambda/{name}",
            "RetentionInDays": {"Ref": "LogRetentionDays"},
        },
    }


@dataclass
class _FunctionPlan:
    logical_id: str
    name: str
    access_name: str
    consumes: list[Any]
    asynchronous: bool


def _wire_sqs_events(
    properties: dict[str, Any], queue_ids_by_name: dict[str, str]
) -> list[dict[str, Any]]:
    consumes: list[dict[str, Any]] = []
    for event in (properties.get("Events") or {}).values():
        if event.get("Type") != "SQS":
            continue
        name = _sqs_queue_name(event["Properties"]["Queue"])
        if name not in queue_ids_by_name:
            raise PackagingError(
                f"@app.on_sqs_message(queue={name!r}): declare the queue name as a *_QUEUE "
                "environment variable of the stage so that the stack creates it"
            )
        arn = {"Fn::GetAtt": [queue_ids_by_name[name], "Arn"]}
        event["Properties"]["Queue"] = arn
        consumes.append(arn)
    return consumes


def _is_async(properties: dict[str, Any]) -> bool:
    return any(
        event.get("Type") in ASYNC_EVENT_TYPES
        for event in (properties.get("Events") or {}).values()
    )


def _drop_chalice_log_groups(resources: dict[str, Any], function_ids: Iterable[str]) -> None:
    for logical_id in list(resources):
        resource = resources[logical_id]
        if resource.get("Type") != "AWS::Logs::LogGroup":
            continue
        name = str(resource["Properties"].get("LogGroupName"))
        if any(f"${{{fid}}}" in name for fid in function_ids):
            del resources[logical_id]


def _explainer_function(
    name: str, environment: dict[str, Any], settings: StackSettings
) -> dict[str, Any]:
    return {
        "Type": "AWS::Serverless::Function",
        "Properties": {
            "FunctionName": name,
            "PackageType": "Image",
            "ImageUri": {"Ref": "ExplainerImageUri"},
            "ImageConfig": {"Command": [EXPLAINER_HANDLER]},
            "Architectures": [settings.architecture],
            "MemorySize": {"Ref": "ExplainerMemorySize"},
            "Timeout": {"Ref": "ExplainerTimeout"},
            "EphemeralStorage": {"Size": 2048},
            "Environment": {"Variables": environment},
            "Tags": {"app": "synapsenet", "stage": settings.stage},
        },
    }


def _parameters(env: dict[str, str]) -> dict[str, Any]:
    bucket_pattern = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
    return {
        "ExplainerImageUri": {
            "Type": "String",
            "Description": "ECR image of the explanation function (layers/explainer/Dockerfile)",
            "AllowedPattern": r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/.+$",
        },
        "DataBucketName": {
            "Type": "String",
            "Default": env["DATA_BUCKET"],
            "AllowedPattern": bucket_pattern,
            "Description": "Globally unique name of the data bucket (incoming/ triggers ingest)",
        },
        "ModelsBucketName": {
            "Type": "String",
            "Default": env["MODELS_BUCKET"],
            "AllowedPattern": bucket_pattern,
            "Description": "Globally unique name of the model artifact bucket",
        },
        "ExplainerMemorySize": {
            "Type": "Number",
            "Default": 3008,
            "MinValue": 512,
            "MaxValue": 10240,
            "Description": "Memory (MB) of the explanation function; CPU scales with it",
        },
        "ExplainerTimeout": {
            "Type": "Number",
            "Default": 300,
            "MinValue": 30,
            "MaxValue": 900,
            "Description": "Timeout (s) of the explanation function (asynchronous jobs)",
        },
        "LogRetentionDays": {
            "Type": "Number",
            "Default": 30,
            "AllowedValues": LOG_RETENTION_DAYS,
            "Description": "Retention of every function's log group",
        },
    }


def _outputs(queues: dict[str, str]) -> dict[str, Any]:
    outputs: dict[str, Any] = {
        "DataBucketName": {"Value": {"Ref": "DataBucket"}},
        "ModelsBucketName": {"Value": {"Ref": "ModelsBucket"}},
        "EventBusName": {"Value": {"Ref": "EventBus"}},
        "ExplainerFunctionName": {"Value": {"Ref": "ExplainerFunction"}},
        "AsyncFailuresQueueUrl": {"Value": {"Ref": "AsyncFailuresQueue"}},
    }
    for logical_id in queues.values():
        outputs[f"{logical_id}Url"] = {"Value": {"Ref": logical_id}}
        outputs[f"{logical_id}DLQUrl"] = {"Value": {"Ref": f"{logical_id}DLQ"}}
    return outputs


def _shared_environment(table_env: dict[str, Any], queues: dict[str, str]) -> dict[str, Any]:
    env: dict[str, Any] = dict(table_env)
    env["DATA_BUCKET"] = {"Ref": "DataBucketName"}
    env["MODELS_BUCKET"] = {"Ref": "ModelsBucketName"}
    env["EVENT_BUS_NAME"] = {"Ref": "EventBus"}
    for env_var, logical_id in queues.items():
        env[env_var] = {"Fn::GetAtt": [logical_id, "QueueName"]}
    return env


def build_template(
    chalice: ChaliceOutput, models: Iterable[Any], settings: StackSettings
) -> dict[str, Any]:
    """Merges Chalice's template with the resources Chalice does not manage.

    Args:
        chalice: What :func:`infra.chalice_build.package_chalice_app` produced.
        models: The PynamoDB models (:func:`chalicelib.domains.all_table_models`).
        settings: Stage, runtime, architecture.

    Raises:
        PackagingError: The app or the stage configuration cannot be deployed as declared.
        KeyError: A function has no access declaration (see :mod:`infra.access`).
    """
    env = chalice.environment
    for required in ("DATA_BUCKET", "MODELS_BUCKET", "EVENT_BUS_NAME", "EXPLANATION_FUNCTION"):
        _require(env, required)
    template = copy.deepcopy(chalice.template)
    template.setdefault("Parameters", {}).update(_parameters(env))
    template.setdefault("Outputs", {})
    resources = template["Resources"]
    inventory = Inventory()

    table_env = add_tables(template, models, inventory)
    add_buckets(template)
    resources["EventBus"] = {
        "Type": "AWS::Events::EventBus",
        "Properties": {"Name": env["EVENT_BUS_NAME"]},
    }
    consumer_timeouts = _consumer_timeouts(chalice)
    inventory.queues = add_queues(template, env, consumer_timeouts)
    resources["AsyncFailuresQueue"] = _queue(
        f"{chalice.app_name}-{settings.stage}-async-failures", 1_209_600
    )
    shared_env = _shared_environment(table_env, inventory.queues)
    queue_ids_by_name = {env[var]: lid for var, lid in inventory.queues.items()}

    plans = []
    for logical_id, chalice_name in sorted(chalice.functions.items()):
        properties = resources[logical_id]["Properties"]
        name = f"{chalice.app_name}-{settings.stage}-{chalice_name}"
        properties["FunctionName"] = name
        properties["Runtime"] = settings.runtime
        properties["Architectures"] = [settings.architecture]
        variables = properties.setdefault("Environment", {}).setdefault("Variables", {})
        variables.update(shared_env)
        variables["EXPLANATION_FUNCTION"] = {"Ref": "ExplainerFunction"}
        consumes = _wire_sqs_events(properties, queue_ids_by_name)
        plans.append(_FunctionPlan(logical_id, name, chalice_name, consumes, _is_async(properties)))
    _drop_chalice_log_groups(resources, chalice.functions)

    explainer_env: dict[str, Any] = {
        **{k: v for k, v in env.items() if k != "EXPLANATION_FUNCTION"},
        **shared_env,
        "SYNAPSE_EXPLANATION_BACKEND": "inprocess",
        "NUMBA_CACHE_DIR": "/tmp/numba",
        "MPLCONFIGDIR": "/tmp/matplotlib",
    }
    resources[inventory.explainer] = _explainer_function(
        env["EXPLANATION_FUNCTION"], explainer_env, settings
    )
    plans.append(
        _FunctionPlan(inventory.explainer, env["EXPLANATION_FUNCTION"], EXPLAINER, [], True)
    )

    _attach_roles(resources, plans, inventory)
    _remove_unused_roles(resources)
    template["Outputs"].update(_outputs(inventory.queues))
    return template


def _consumer_timeouts(chalice: ChaliceOutput) -> dict[str, int]:
    timeouts: dict[str, int] = {}
    for logical_id in chalice.functions:
        properties = chalice.template["Resources"][logical_id]["Properties"]
        for event in (properties.get("Events") or {}).values():
            if event.get("Type") == "SQS":
                name = _sqs_queue_name(event["Properties"]["Queue"])
                if name:
                    timeouts[name] = int(properties.get("Timeout", 30))
    return timeouts


def _attach_roles(
    resources: dict[str, Any], plans: list[_FunctionPlan], inventory: Inventory
) -> None:
    dead_letter = {"Fn::GetAtt": ["AsyncFailuresQueue", "Arn"]}
    for plan in plans:
        function = resources[plan.logical_id]
        log_group = f"{plan.logical_id}LogGroup"
        role = f"{plan.logical_id}Role"
        resources[log_group] = _log_group(plan.name)
        policy = policy_document(
            access_for(plan.access_name),
            inventory,
            log_group,
            consumes=plan.consumes,
            dead_letter_arn=dead_letter if plan.asynchronous else None,
        )
        resources[role] = role_resource(policy, f"{plan.logical_id}Policy")
        function["Properties"]["Role"] = {"Fn::GetAtt": [role, "Arn"]}
        function["DependsOn"] = sorted({*_as_list(function.get("DependsOn")), log_group})
        if plan.asynchronous:
            function["Properties"]["DeadLetterQueue"] = {"Type": "SQS", "TargetArn": dead_letter}


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _remove_unused_roles(resources: dict[str, Any]) -> None:
    """Drops Chalice's generated roles once every function has its own."""
    used = {
        r["Properties"]["Role"]["Fn::GetAtt"][0]
        for r in resources.values()
        if r.get("Type") == "AWS::Serverless::Function"
        and isinstance(r["Properties"].get("Role"), dict)
    }
    for logical_id in list(resources):
        resource = resources[logical_id]
        if resource.get("Type") == "AWS::IAM::Role" and logical_id not in used:
            del resources[logical_id]
