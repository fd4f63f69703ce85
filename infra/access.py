"""Least-privilege IAM: what each function may touch, and the policy built from it.

Every Lambda function gets its own role. Chalice's single auto-generated role is replaced, because
Chalice's policy analyzer cannot see PynamoDB or the lazily created boto3 clients this app uses.

A function that is not declared in :data:`FUNCTION_ACCESS` stops the packaging with an error
naming it: a new handler must say what it needs before it can be deployed.

Tables are granted per domain: the package that declares the PynamoDB model
(``chalicelib.<domain>.repository`` → ``<domain>``). ``core`` holds the event outbox, so every
function that publishes events gets it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_DOMAINS = frozenset({"*"})

DYNAMODB_ACTIONS = [
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:UpdateItem",
]
S3_READ = ["s3:GetObject"]
S3_WRITE = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
SQS_SEND = ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"]
SQS_CONSUME = [
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sqs:ReceiveMessage",
]


@dataclass(frozen=True)
class Access:
    """What one function may touch.

    Attributes:
        domains: Table domains (``auth``, ``core``, ``registry``, ...); ``ALL_DOMAINS`` for all.
        data_bucket: ``""``, ``"read"`` or ``"write"`` (read + write + delete).
        models_bucket: Same, for the models bucket.
        publish: ``events:PutEvents`` on the event bus.
        send_queues: Env vars (``*_QUEUE``) naming queues the function sends to.
        invoke_explainer: ``lambda:InvokeFunction`` on the explanation function.

    The queue a function is triggered by, its log group and its async dead-letter queue are
    granted from the template itself, not declared here.
    """

    domains: frozenset[str] = frozenset()
    data_bucket: str = ""
    models_bucket: str = ""
    publish: bool = False
    send_queues: tuple[str, ...] = ()
    invoke_explainer: bool = False


EXPLAINER = "explainer"
"""Name under which the explanation function (not a Chalice function) is declared."""

_EXPLANATION = Access(
    domains=frozenset({"explainability", "registry", "dataversion", "core"}),
    data_bucket="read",
    models_bucket="write",
    publish=True,
)

FUNCTION_ACCESS: dict[str, Access] = {
    # The REST API: every domain's routes, presigned uploads, job submission, sync explanations.
    "api_handler": Access(
        domains=ALL_DOMAINS,
        data_bucket="write",
        models_bucket="write",
        publish=True,
        send_queues=("EXPLANATION_JOBS_QUEUE",),
        invoke_explainer=True,
    ),
    # Redelivers outboxed events.
    "maintenance": Access(domains=frozenset({"core"}), publish=True),
    # The monitor's tick: lists running experiments and fans them out to the monitor queue.
    "experiment_monitor": Access(
        domains=frozenset({"abtesting"}), send_queues=("EXPERIMENT_MONITOR_QUEUE",)
    ),
    # Canary checks and automatic rollback, ramps and bandits of the experiments a monitor
    # message names: experiments, the registry's stages, events. Explanation guardrails: a
    # sample of a dataset version (its item and bytes), one explanation job per arm (its item,
    # a large request in the models bucket, its queue message; the estimate is asked of the
    # explanation function) and the jobs' results.
    "experiment_monitor_worker": Access(
        domains=frozenset({"abtesting", "registry", "core", "dataversion", "explainability"}),
        data_bucket="read",
        models_bucket="write",
        publish=True,
        send_queues=("EXPLANATION_JOBS_QUEUE",),
        invoke_explainer=True,
    ),
    # A file landed under incoming/: new dataset version, content-addressed copy, rejection.
    "dataset_ingest": Access(
        domains=frozenset({"dataversion", "core"}), data_bucket="write", publish=True
    ),
    # A direct (declared SHA-256) upload landed in cas/: versioned in place.
    "dataset_upload": Access(
        domains=frozenset({"dataversion", "core"}), data_bucket="write", publish=True
    ),
    # Hourly: dataset retention policies, then garbage collection of unreferenced content
    # (lists and deletes under cas/).
    "dataset_retention": Access(
        domains=frozenset({"dataversion", "core"}), data_bucket="write", publish=True
    ),
    # Queued explanation jobs: hands the compute to the explanation function.
    "explanation_worker": Access(
        domains=_EXPLANATION.domains,
        data_bucket="read",
        models_bucket="write",
        publish=True,
        invoke_explainer=True,
    ),
    EXPLAINER: _EXPLANATION,
}


@dataclass
class Inventory:
    """Logical ids of what the template creates, for building policies.

    Attributes:
        tables: Domain → logical ids of its ``AWS::DynamoDB::Table`` resources.
        data_bucket_param: Parameter holding the data bucket's name.
        models_bucket_param: Parameter holding the models bucket's name.
        event_bus: Logical id of the ``AWS::Events::EventBus``.
        queues: ``*_QUEUE`` env var → logical id of its ``AWS::SQS::Queue``.
        explainer: Logical id of the explanation function.
    """

    tables: dict[str, list[str]] = field(default_factory=dict)
    data_bucket_param: str = "DataBucketName"
    models_bucket_param: str = "ModelsBucketName"
    event_bus: str = "EventBus"
    queues: dict[str, str] = field(default_factory=dict)
    explainer: str = "ExplainerFunction"


def access_for(name: str) -> Access:
    """The declared access of function ``name``.

    Raises:
        KeyError: With a message naming the function and where to declare it.
    """
    try:
        return FUNCTION_ACCESS[name]
    except KeyError:
        raise KeyError(
            f"function {name!r} has no access declaration; add it to FUNCTION_ACCESS in "
            "infra/access.py (tables by domain, buckets, events, queues) so that its role "
            "grants only what it uses"
        ) from None


def _statement(sid: str, actions: list[str], resources: list[Any]) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": sorted(set(actions)), "Resource": resources}


def _bucket_statements(sid: str, level: str, param: str) -> list[dict[str, Any]]:
    if not level:
        return []
    actions = S3_WRITE if level == "write" else S3_READ
    bucket = {"Fn::Sub": f"arn:${{AWS::Partition}}:s3:::${{{param}}}"}
    objects = {"Fn::Sub": f"arn:${{AWS::Partition}}:s3:::${{{param}}}/*"}
    return [
        _statement(f"{sid}Objects", actions, [objects]),
        _statement(f"{sid}List", ["s3:ListBucket"], [bucket]),
    ]


def _table_statement(access: Access, inventory: Inventory) -> list[dict[str, Any]]:
    if access.domains == ALL_DOMAINS:
        ids = [i for ids in inventory.tables.values() for i in ids]
    else:
        ids = [i for domain in sorted(access.domains) for i in inventory.tables.get(domain, [])]
    if not ids:
        return []
    resources: list[Any] = []
    for logical_id in sorted(set(ids)):
        resources.append({"Fn::GetAtt": [logical_id, "Arn"]})
        resources.append({"Fn::Sub": f"${{{logical_id}.Arn}}/index/*"})
    return [_statement("Tables", DYNAMODB_ACTIONS, resources)]


def _queue_arn(inventory: Inventory, env_var: str) -> dict[str, Any]:
    try:
        return {"Fn::GetAtt": [inventory.queues[env_var], "Arn"]}
    except KeyError:
        raise KeyError(f"{env_var} names no queue of this stack") from None


def policy_document(
    access: Access,
    inventory: Inventory,
    log_group: str,
    consumes: list[Any] | None = None,
    dead_letter_arn: Any = None,
) -> dict[str, Any]:
    """The IAM policy document of one function.

    Args:
        access: What the function may touch.
        inventory: What the template creates.
        log_group: Logical id of the function's ``AWS::Logs::LogGroup``.
        consumes: ARNs (or intrinsics) of the queues that trigger the function.
        dead_letter_arn: ARN of the queue receiving its failed asynchronous invocations.
    """
    statements = [
        _statement(
            "Logs",
            ["logs:CreateLogStream", "logs:PutLogEvents"],
            [{"Fn::GetAtt": [log_group, "Arn"]}],
        )
    ]
    statements += _table_statement(access, inventory)
    statements += _bucket_statements("DataBucket", access.data_bucket, inventory.data_bucket_param)
    statements += _bucket_statements(
        "ModelsBucket", access.models_bucket, inventory.models_bucket_param
    )
    if access.publish:
        statements.append(
            _statement(
                "Events", ["events:PutEvents"], [{"Fn::GetAtt": [inventory.event_bus, "Arn"]}]
            )
        )
    if access.send_queues:
        arns = [_queue_arn(inventory, env_var) for env_var in access.send_queues]
        statements.append(_statement("SendQueues", SQS_SEND, arns))
    if consumes:
        statements.append(_statement("ConsumeQueues", SQS_CONSUME, list(consumes)))
    if dead_letter_arn is not None:
        statements.append(_statement("DeadLetter", ["sqs:SendMessage"], [dead_letter_arn]))
    if access.invoke_explainer:
        statements.append(
            _statement(
                "InvokeExplainer",
                ["lambda:InvokeFunction"],
                [{"Fn::GetAtt": [inventory.explainer, "Arn"]}],
            )
        )
    return {"Version": "2012-10-17", "Statement": statements}


def role_resource(policy: dict[str, Any], policy_name: str) -> dict[str, Any]:
    """An ``AWS::IAM::Role`` Lambda can assume, with ``policy`` inline."""
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            },
            "Policies": [{"PolicyName": policy_name, "PolicyDocument": policy}],
        },
    }
