"""``dispatch`` maps AWS failures that outlived the retries to 503 (and lost races to 409)."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ParamValidationError,
    ReadTimeoutError,
)
from pynamodb.exceptions import (
    DoesNotExist,
    GetError,
    PutError,
    TransactGetError,
    TransactWriteError,
    VerboseClientError,
)

from chalicelib.core.errors import Conflict, ServiceUnavailable
from chalicelib.core.http import _translate_aws_error


def _client_error(code: str, operation: str = "PutItem") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}}, operation)


def _verbose(code: str, reasons: list[dict[str, str]] | None = None) -> VerboseClientError:
    return VerboseClientError(
        {"Error": {"Code": code, "Message": "m"}, "CancellationReasons": reasons or []},
        "TransactWriteItems",
        cancellation_reasons=[
            None if r["Code"] == "None" else type("R", (), {"code": r["Code"]})()
            for r in (reasons or [])
        ],
    )


@pytest.mark.parametrize(
    "exc",
    [
        _client_error("ThrottlingException"),
        _client_error("SlowDown", "PutObject"),
        _verbose("ProvisionedThroughputExceededException"),
        EndpointConnectionError(endpoint_url="http://x"),
        ConnectTimeoutError(endpoint_url="http://x"),
        ReadTimeoutError(endpoint_url="http://x"),
        PutError("put failed", _client_error("InternalServerError")),
        GetError("get failed", _client_error("ThrottlingException", "GetItem")),
        TransactWriteError("tx failed", _verbose("ThrottlingException")),
        TransactGetError("tx failed", _verbose("InternalServerError")),
        TransactWriteError(
            "tx failed",
            _verbose("TransactionCanceledException", [{"Code": "ThrottlingError"}]),
        ),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_dependency_failures_become_503(exc: Exception) -> None:
    mapped = _translate_aws_error(exc)
    assert isinstance(mapped, ServiceUnavailable)
    assert mapped.status == 503 and mapped.code == "service_unavailable"


@pytest.mark.parametrize(
    "exc",
    [
        PutError("condition", _client_error("ConditionalCheckFailedException")),
        TransactWriteError(
            "tx failed",
            _verbose(
                "TransactionCanceledException",
                [{"Code": "None"}, {"Code": "ConditionalCheckFailed"}],
            ),
        ),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_an_unhandled_condition_failure_is_a_409(exc: Exception) -> None:
    mapped = _translate_aws_error(exc)
    assert isinstance(mapped, Conflict) and mapped.status == 409


def _validation(message: str) -> ClientError:
    error = {"Error": {"Code": "ValidationException", "Message": message}}
    return ClientError(error, "PutItem")


@pytest.mark.parametrize(
    "exc",
    [
        PutError("put failed", _validation("Number underflow. Attempting to store a number")),
        PutError("put failed", _validation("Number overflow. Attempting to store a number")),
        _validation("Item size has exceeded the maximum allowed size"),
    ],
    ids=["underflow", "overflow", "item-size"],
)
def test_values_dynamodb_cannot_store_are_a_422(exc: Exception) -> None:
    mapped = _translate_aws_error(exc)
    assert mapped is not None and mapped.status == 422 and mapped.code == "unstorable"


def test_an_empty_id_used_as_a_key_is_a_400() -> None:
    message = (
        "One or more parameter values are not valid. The AttributeValue for a key attribute "
        "cannot contain an empty string value. Key: dataset_id"
    )
    mapped = _translate_aws_error(GetError("get failed", _validation(message)))
    assert mapped is not None and mapped.status == 400 and mapped.code == "invalid_request"


@pytest.mark.parametrize(
    "exc",
    [
        DoesNotExist(),
        ParamValidationError(report="bad"),
        KeyError("x"),
        ValueError("x"),
        PutError("bad key", _validation("The provided key element does not match the schema")),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_programming_errors_stay_unmapped(exc: Exception) -> None:
    assert _translate_aws_error(exc) is None
