"""The local stack's moto fixes (``synapse_local.motofix``): memory that stays flat as outcomes
accumulate, and transactions that roll back exactly as stock moto's table copies did.

Memory is measured with tracemalloc in bytes (never in seconds): what stays allocated per
1,000 outcomes posted, and how far the peak rises above it while they are written.
"""

from __future__ import annotations

import copy
import gc
import random
import re
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import Table
from moto.s3.models import FakeKey, S3Backend
from moto.s3.responses import S3Response

from chalicelib.abtesting.models import Outcome
from chalicelib.abtesting.outcomes_repository import OutcomeStore
from synapse_local import motofix

THOUSAND = 1000
BATCH = 200
ROUNDS = 4
# A dedup item and its share of moto's structures take about 1 KB; stock moto kept 17 MB per
# 1,000 outcomes after the first 1,000 and 10 MB more for every further 1,000.
MAX_RETAINED_PER_THOUSAND = 3 * 1024 * 1024
SLACK = 512 * 1024


def _post_thousand(store: OutcomeStore, start: int) -> None:
    now = datetime.now(timezone.utc)
    for offset in range(start, start + THOUSAND, BATCH):
        outcomes = [
            Outcome("control" if i % 2 else "treatment", f"r{i}", i % 7 != 0, 12.5 + i % 40)
            for i in range(offset, offset + BATCH)
        ]
        store.record("exp-memory", outcomes, now)


def _measure_rounds(store: OutcomeStore) -> list[tuple[int, int]]:
    """(bytes retained, bytes of peak above the retained) per round of 1,000 outcomes."""
    _post_thousand(store, 0)  # clients, parsers and tables warmed up
    rounds = []
    tracemalloc.start()
    try:
        for index in range(1, ROUNDS + 1):
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            _post_thousand(store, index * THOUSAND)
            gc.collect()
            current, peak = tracemalloc.get_traced_memory()
            rounds.append((current - before, peak - current))
    finally:
        tracemalloc.stop()
    return rounds


def test_memory_per_thousand_outcomes_stays_constant_as_outcomes_accumulate(aws: Any) -> None:
    rounds = _measure_rounds(OutcomeStore())

    retained = [kept for kept, _ in rounds]
    peaks = [above for _, above in rounds]
    assert max(retained) <= MAX_RETAINED_PER_THOUSAND, rounds
    # Flat: the last 1,000 cost what the first did (stock moto: +10 MB per 1,000 stored).
    assert retained[-1] <= retained[0] * 1.5 + SLACK, rounds
    # No copy of a whole table per transaction: the peak does not rise with the table's size.
    assert peaks[-1] <= peaks[0] * 1.5 + SLACK, rounds


# ---- transactions: the undo log against stock moto's table copies --------------------------

HASH_TABLE = "motofix-hash"
RANGE_TABLE = "motofix-range"
KEYS = ["a", "b", "c", "d"]
ACCOUNT = "123456789012"


@pytest.fixture
def backends() -> Iterator[tuple[DynamoDBBackend, DynamoDBBackend]]:
    """Two DynamoDB backends (one per region) with the same tables; the range table has a
    stream, whose records of a cancelled transaction must be dropped too."""
    with mock_aws():
        pair = []
        for region in ("us-east-1", "eu-west-1"):
            client = boto3.client("dynamodb", region_name=region)
            client.create_table(
                TableName=HASH_TABLE,
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
            client.create_table(
                TableName=RANGE_TABLE,
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                BillingMode="PAY_PER_REQUEST",
                StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
            )
            pair.append(dynamodb_backends[ACCOUNT][region])
        yield pair[0], pair[1]


def _key(rng: random.Random, table: str) -> dict[str, Any]:
    key = {"pk": {"S": rng.choice(KEYS)}}
    if table == RANGE_TABLE:
        key["sk"] = {"S": rng.choice(KEYS[:2])}
    return key


def _action(rng: random.Random) -> dict[str, Any]:
    table = rng.choice([HASH_TABLE, RANGE_TABLE])
    key = _key(rng, table)
    kind = rng.choice(["Put", "PutNew", "Update", "UpdateIfExists", "Delete", "Check"])
    if kind in ("Put", "PutNew"):
        put: dict[str, Any] = {
            "TableName": table,
            "Item": {**key, "v": {"N": str(rng.randint(0, 9))}},
        }
        if kind == "PutNew":
            put["ConditionExpression"] = "attribute_not_exists(pk)"
        return {"Put": put}
    if kind.startswith("Update"):
        update = {
            "TableName": table,
            "Key": key,
            "UpdateExpression": "ADD n :one SET s = :s",
            "ExpressionAttributeValues": {":one": {"N": "1"}, ":s": {"S": rng.choice(KEYS)}},
        }
        if kind == "UpdateIfExists":
            update["ConditionExpression"] = "attribute_exists(pk)"
        return {"Update": update}
    if kind == "Delete":
        return {"Delete": {"TableName": table, "Key": key}}
    return {
        "ConditionCheck": {
            "TableName": table,
            "Key": key,
            "ConditionExpression": "attribute_exists(pk)",
        }
    }


def _contents(backend: DynamoDBBackend) -> dict[str, Any]:
    """Every item of both tables, and how many stream records the range table holds."""
    found: dict[str, Any] = {}
    for name in (HASH_TABLE, RANGE_TABLE):
        table = backend.tables[name]
        items = []
        for bucket in table.items.values():
            for item in bucket.values() if isinstance(bucket, dict) else [bucket]:
                items.append(item.to_json()["Attributes"])
        found[name] = sorted(items, key=repr)
    found["stream records"] = len(backend.tables[RANGE_TABLE].stream_shard.items)
    return found


def _apply(method: Any, backend: DynamoDBBackend, actions: list[dict[str, Any]]) -> str:
    try:
        method(backend, actions)
    except Exception as exc:  # noqa: BLE001 - the outcome compared is the exception's type
        return type(exc).__name__
    return "ok"


def test_failed_transactions_leave_tables_exactly_as_stock_moto_rollback_does(
    backends: tuple[DynamoDBBackend, DynamoDBBackend],
) -> None:
    patched, stock = backends
    undo_logged = DynamoDBBackend.transact_write_items
    original = undo_logged.__wrapped__
    rng = random.Random(17)
    outcomes = set()
    for _ in range(400):
        actions = [_action(rng) for _ in range(rng.randint(1, 6))]
        ours = _apply(undo_logged, patched, actions)
        theirs = _apply(original, stock, actions)

        assert ours == theirs, actions
        assert _contents(patched) == _contents(stock), actions
        outcomes.add(ours)
    # The sequence exercised commits, cancelled transactions and repeated keys.
    assert {"ok", "TransactionCanceledException", "MultipleTransactionsException"} <= outcomes


def test_a_cancelled_transaction_restores_updated_put_and_deleted_items(
    backends: tuple[DynamoDBBackend, DynamoDBBackend],
) -> None:
    backend, _ = backends
    backend.put_item(HASH_TABLE, {"pk": {"S": "a"}, "n": {"N": "1"}})
    backend.put_item(HASH_TABLE, {"pk": {"S": "b"}, "n": {"N": "2"}})
    before = _contents(backend)
    actions = [
        {"Update": {"TableName": HASH_TABLE, "Key": {"pk": {"S": "a"}},
                    "UpdateExpression": "ADD n :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}}}},
        {"Delete": {"TableName": HASH_TABLE, "Key": {"pk": {"S": "b"}}}},
        {"Put": {"TableName": RANGE_TABLE, "Item": {"pk": {"S": "c"}, "sk": {"S": "x"}}}},
        {"Put": {"TableName": HASH_TABLE, "Item": {"pk": {"S": "d"}},
                 "ConditionExpression": "attribute_exists(pk)"}},
    ]  # fmt: skip

    assert _apply(DynamoDBBackend.transact_write_items, backend, actions) == (
        "TransactionCanceledException"
    )
    assert _contents(backend) == before
    # No empty range bucket is left behind for the key that was put and taken back.
    assert DynamoType({"S": "c"}) not in backend.tables[RANGE_TABLE].items


def test_transactions_do_not_copy_whole_tables(
    backends: tuple[DynamoDBBackend, DynamoDBBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, _ = backends
    for index in range(50):
        backend.put_item(HASH_TABLE, {"pk": {"S": f"k{index}"}})
    copied: list[type] = []
    real_deepcopy = motofix.copy.deepcopy

    def counting(obj: Any, memo: Any = None) -> Any:
        copied.append(type(obj))
        return real_deepcopy(obj, memo)

    monkeypatch.setattr(motofix.copy, "deepcopy", counting)
    actions = [
        {"Put": {"TableName": HASH_TABLE, "Item": {"pk": {"S": f"k{i}"}, "v": {"N": "1"}}}}
        for i in range(5)
    ]
    DynamoDBBackend.transact_write_items(backend, actions)

    assert Item in copied  # the undo log copies the items the transaction names...
    assert Table not in copied  # ...and never a table
    assert len(_contents(backend)[HASH_TABLE]) == 50


def test_moto_objects_are_not_kept_alive_by_instance_tracking(aws: Any) -> None:
    Item(DynamoType({"S": "gone"}), None, {"pk": {"S": "gone"}})

    assert Item.instances_tracked == []
    assert motofix.install() is False  # idempotent: nothing patched twice


CONDITIONS = [
    ("attribute_not_exists(pk)", None, None),
    ("attribute_exists(#n) AND #n > :v", {"#n": "n"}, {":v": {"N": "2"}}),
    ("#n > :v", {"#n": "n"}, {":v": {"N": "5"}}),  # same text, other value: another tree
    ("NOT (s = :s) OR size(s) < :v", None, {":s": {"S": "b"}, ":v": {"N": "2"}}),
]


def test_remembered_condition_trees_evaluate_like_freshly_parsed_ones() -> None:
    from moto.dynamodb.comparisons import ConditionExpressionParser

    fresh_parse = ConditionExpressionParser.parse.__wrapped__
    items = [
        Item(DynamoType({"S": "a"}), None, {"pk": {"S": "a"}, "n": {"N": str(n)}, "s": {"S": s}})
        for n in range(7)
        for s in ("a", "b", "cc")
    ] + [None]
    for expression, names, values in CONDITIONS * 2:  # the second pass hits the memory
        remembered = ConditionExpressionParser(expression, names, values)
        fresh = ConditionExpressionParser(expression, names, values)
        ours, theirs = remembered.parse(), fresh_parse(fresh)

        assert [ours.expr(item) for item in items] == [theirs.expr(item) for item in items]
        assert remembered.expr_attr_names_found == fresh.expr_attr_names_found
        assert remembered.expr_attr_values_found == fresh.expr_attr_values_found


def test_an_invalid_condition_is_refused_every_time() -> None:
    from moto.dynamodb.comparisons import ConditionExpressionParser

    for _ in range(2):
        with pytest.raises(Exception, match="Bad function expression"):
            ConditionExpressionParser("attribute_exists(", None, None).parse()


def _random_update_expression(rng: random.Random) -> str:
    paths = ["a", "a.b", "#n", "#n.c", "#m", "m[0]", "x", "y.z", "#n.c.d"]
    clauses = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["SET", "ADD", "REMOVE"])
        chosen = [rng.choice(paths) for _ in range(rng.randint(1, 5))]
        if kind == "SET":
            actions = [f"{path} = :v" for path in chosen]
        elif kind == "ADD":
            actions = [f"{path} :v" for path in chosen]
        else:
            actions = chosen
        clauses.append(f"{kind} {', '.join(actions)}")
    return " ".join(clauses)


def _outcome(validator: Any, tree: Any, traverse: Any) -> Any:
    try:
        traverse(validator, tree)
    except Exception as exc:
        return type(exc), str(exc)
    return "valid"


def test_update_expressions_are_validated_once_with_moto_s_own_results_and_errors() -> None:
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser
    from moto.dynamodb.parsing.validators import ActionCountValidator, OverlappingPathsValidator

    rng = random.Random(4)
    names = {"#n": "n", "#m": "a"}  # '#m' names the same attribute as the plain path 'a'
    seen: set[Any] = set()
    for _ in range(400):
        expression = _random_update_expression(rng)
        for validator in (ActionCountValidator(), OverlappingPathsValidator(names)):
            once = type(validator).traverse
            assert once._once
            tree = UpdateExpressionParser.make(expression)
            ours = _outcome(validator, tree, once)
            theirs = _outcome(validator, UpdateExpressionParser.make(expression), once.__wrapped__)
            assert ours == theirs, expression
            seen.add(ours if ours == "valid" else ours[0].__name__)
    # The generated expressions exercise every outcome: valid, too many clauses, duplicates.
    assert seen == {"valid", "TooManyClauses", "DuplicateUpdateExpression"}


def _shape(node: Any) -> Any:
    from moto.dynamodb.parsing.ast_nodes import Node

    if isinstance(node, Node):
        return (type(node).__name__, tuple(_shape(child) for child in node.children or ()))
    return repr(node)


def _table_t() -> Any:
    """A DynamoDB client of the mocked account with table ``t`` (hash key ``pk``) created."""
    client = boto3.client("dynamodb", region_name="us-east-1")
    client.create_table(
        TableName="t", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
    )  # fmt: skip
    return client


def test_remembered_update_trees_are_freshly_parsed_ones_and_stay_unchanged_by_updates() -> None:
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser

    fresh_make = UpdateExpressionParser.make.__func__.__wrapped__
    rng = random.Random(5)
    expressions = [_random_update_expression(rng) for _ in range(200)]
    for expression in expressions * 2:  # the second pass hits the memory
        ours = UpdateExpressionParser.make(expression)
        assert _shape(ours) == _shape(fresh_make(UpdateExpressionParser, expression))
    with mock_aws():
        dynamodb = _table_t()
        dynamodb.put_item(
            TableName="t", Item={"pk": {"S": "a"}, "m": {"M": {}}, "gone": {"S": "x"}}
        )
        expression = "SET #n = if_not_exists(#n, :z) + :one, m.a = :one ADD c :one REMOVE gone"
        for _ in range(2):  # the remembered tree serves every update and is left as parsed
            dynamodb.update_item(
                TableName="t", Key={"pk": {"S": "a"}}, UpdateExpression=expression,
                ExpressionAttributeNames={"#n": "n"},
                ExpressionAttributeValues={":z": {"N": "0"}, ":one": {"N": "1"}},
            )  # fmt: skip
        item = dynamodb.get_item(TableName="t", Key={"pk": {"S": "a"}})["Item"]
        assert item == {"pk": {"S": "a"}, "n": {"N": "2"}, "m": {"M": {"a": {"N": "1"}}},
                        "c": {"N": "2"}}  # fmt: skip
        remembered = UpdateExpressionParser.make(expression)
        assert _shape(remembered) == _shape(fresh_make(UpdateExpressionParser, expression))


def test_an_invalid_update_expression_is_refused_every_time() -> None:
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser

    for _ in range(2):
        with pytest.raises(Exception, match="Invalid UpdateExpression"):
            UpdateExpressionParser.make("SET a = ")


def test_sums_of_tiny_numbers_stay_addable(aws: Any) -> None:
    """moto wrote 0.0000000004 + 0.0000000005 as ``9E-10`` and then failed to add to it."""
    from chalicelib.core import aws as clients

    client = clients.client("dynamodb")
    table = next(t for t in client.list_tables()["TableNames"] if t.endswith("experiment-metrics"))
    key = {"experiment_id": {"S": "tiny"}, "shard_key": {"S": "x"}}
    for amount in ("0.0000000004", "0.0000000005", "0.000000001"):
        client.update_item(
            TableName=table, Key=key, UpdateExpression="ADD #a :v",
            ExpressionAttributeNames={"#a": "ss"}, ExpressionAttributeValues={":v": {"N": amount}},
        )  # fmt: skip

    stored = client.get_item(TableName=table, Key=key)["Item"]["ss"]["N"]
    assert Decimal(stored) == Decimal("0.0000000019")


# ---- the walk with one map, the direct tree copy and JSON-only errors ----------------------

START_ATTRIBUTES: dict[str, list[Any]] = {
    "a": [{"N": "1"}, {"M": {"b": {"N": "2"}}}, {"S": "text"}],
    "n": [{"M": {"c": {"M": {"d": {"N": "3"}}}}}, {"N": "4"}],
    "m": [{"L": [{"N": "5"}]}, {"SS": ["p", "q"]}],
    "x": [{"S": "x"}, {"NS": ["1", "2"]}],
    "y": [{"M": {"z": {"N": "6"}}}],
}
VALUES = [{"N": "7"}, {"S": "s"}, {"SS": ["r"]}, {"NS": ["9"]}, {"L": [{"N": "8"}]}]


def _update_case(rng: random.Random) -> tuple[dict[str, Any], str, dict[str, Any]]:
    item = {"pk": {"S": "case"}}
    for name, choices in START_ATTRIBUTES.items():
        if rng.random() < 0.6:
            item[name] = rng.choice(choices)
    expression = _random_update_expression(rng) if rng.random() < 0.3 else _distinct_paths(rng)
    if rng.random() < 0.3:
        expression += rng.choice([" SET q = if_not_exists(q, :v)", " SET l = list_append(m, :v)"])
    return item, expression, rng.choice(VALUES)


def _distinct_paths(rng: random.Random) -> str:
    """An update whose actions name paths that do not overlap (most are valid)."""
    paths = rng.sample(["a", "#n.c", "m[0]", "x", "y.z", "w"], rng.randint(1, 5))
    kinds = rng.sample(["SET", "ADD", "REMOVE"], rng.randint(1, min(3, len(paths))))
    clauses: dict[str, list[str]] = {kind: [] for kind in kinds}
    for index, path in enumerate(paths):
        clauses[kinds[index % len(kinds)]].append(path)
    actions = {"SET": "{} = :v", "ADD": "{} :v", "REMOVE": "{}"}
    return " ".join(
        f"{kind} {', '.join(actions[kind].format(p) for p in chosen)}"
        for kind, chosen in clauses.items()
    )


def _updated(client: Any, case: tuple[dict[str, Any], str, dict[str, Any]]) -> Any:
    item, expression, value = case
    client.put_item(TableName="t", Item=item)
    names = {name: target for name, target in (("#n", "n"), ("#m", "a")) if name in expression}
    try:
        client.update_item(
            TableName="t", Key={"pk": {"S": "case"}}, UpdateExpression=expression,
            ExpressionAttributeValues={":v": value},
            **({"ExpressionAttributeNames": names} if names else {}),
        )  # fmt: skip
    except client.exceptions.ClientError as exc:
        return exc.response["Error"]["Code"], exc.response["Error"]["Message"]
    except (TypeError, ValueError, AttributeError) as exc:  # moto's own failures, met as they are
        return type(exc).__name__, str(exc)
    return client.get_item(TableName="t", Key={"pk": {"S": "case"}})["Item"]


def test_updates_walked_with_one_map_copied_directly_and_erring_in_json_are_moto_s_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """300 random updates of random items: the items and the errors (code and message) are
    what moto's own walk, ``copy.deepcopy`` and error construction give."""
    from moto.core import exceptions
    from moto.dynamodb.parsing import validators
    from moto.dynamodb.parsing.ast_nodes import DepthFirstTraverser

    rng = random.Random(6)
    cases = [_update_case(rng) for _ in range(300)]
    with mock_aws():
        client = _table_t()
        ours = [_updated(client, case) for case in cases]
        assert DepthFirstTraverser.traverse._one_map and validators.deepcopy._trees
        monkeypatch.setattr(
            DepthFirstTraverser, "traverse", DepthFirstTraverser.traverse.__wrapped__
        )
        monkeypatch.setattr(validators, "deepcopy", copy.deepcopy)
        monkeypatch.setattr(
            exceptions._RESTError, "__init__", exceptions._RESTError.__init__.__wrapped__
        )
        _undo_kept_item_sizes(monkeypatch)
        assert validators.Validator.validate._with_work  # type: ignore[attr-defined]
        monkeypatch.setattr(
            validators.Validator, "validate", validators.Validator.validate.__wrapped__
        )
        theirs = [_updated(client, case) for case in cases]
    assert ours == theirs
    errors = {found[1].split(";")[0][:40] for found in ours if isinstance(found, tuple)}
    assert sum(isinstance(found, dict) for found in ours) >= 25 and len(errors) >= 5, errors


def _undo_kept_item_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gives moto back its own item-size check at every assignment."""
    from moto.dynamodb.models.dynamo_type import LimitedSizeDict
    from moto.dynamodb.parsing.executors import UpdateExpressionExecutor

    assert LimitedSizeDict.__setitem__._kept  # type: ignore[attr-defined]
    monkeypatch.setattr(LimitedSizeDict, "__setitem__", LimitedSizeDict.__setitem__.__wrapped__)
    monkeypatch.setattr(
        UpdateExpressionExecutor, "execute", UpdateExpressionExecutor.execute.__wrapped__
    )


def _near_the_size_limit(rng: random.Random) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """An item of 300-400 KB in ten strings (sometimes a set or map among them) and an update
    of a few SETs, an ADD (of a number or a string set) and a REMOVE, in any order, whose new
    strings may take it over moto's limit."""
    item: dict[str, Any] = {"pk": {"S": "case"}}
    for index in range(10):
        item[f"a{index}"] = {"S": "é" * rng.randint(15_000, 20_000)}
    if rng.random() < 0.3:
        item[f"a{rng.randrange(10)}"] = rng.choice([{"SS": ["p", "q"]}, {"M": {"b": {"N": "2"}}}])
    sets = [
        f"{rng.choice(['a', 'b'])}{rng.randrange(10)} = :s{i}" for i in range(rng.randint(1, 3))
    ]
    parts = ["SET " + ", ".join(dict.fromkeys(sets))]
    if rng.random() < 0.7:
        parts.append(f"ADD c{rng.randrange(3)} :n" if rng.random() < 0.4 else "ADD d :ss")
    if rng.random() < 0.4:
        parts.append(f"REMOVE a{rng.randrange(10)}")
    rng.shuffle(parts)  # moto runs the clauses in their order: a REMOVE before a SET too
    values: dict[str, Any] = {
        ":n": {"N": str(rng.randint(1, 9))},
        ":ss": {"SS": ["y" * rng.choice([10, 30_000, 60_000])]},
    }
    for index in range(3):
        values[f":s{index}"] = {"S": "x" * rng.choice([10, 20_000, 60_000, 120_000])}
    return item, " ".join(parts), values


def _updated_with(client: Any, case: tuple[dict[str, Any], str, dict[str, Any]]) -> Any:
    item, expression, values = case
    client.put_item(TableName="t", Item=item)
    used = {name: value for name, value in values.items() if name in expression}
    try:
        client.update_item(
            TableName="t", Key={"pk": {"S": "case"}}, UpdateExpression=expression,
            **({"ExpressionAttributeValues": used} if used else {}),
        )  # fmt: skip
    except client.exceptions.ClientError as exc:
        return exc.response["Error"]["Code"], exc.response["Error"]["Message"]
    return client.get_item(TableName="t", Key={"pk": {"S": "case"}})["Item"]


def _ours_equal_moto_s_own(
    monkeypatch: pytest.MonkeyPatch, cases: list[tuple[dict[str, Any], str, dict[str, Any]]]
) -> list[Any]:
    """The items (or errors) of ``cases`` with the kept item sizes, checked equal to those of
    moto's own check of the whole item at every assignment."""
    with mock_aws():
        client = _table_t()
        ours = [_updated_with(client, case) for case in cases]
        _undo_kept_item_sizes(monkeypatch)
        theirs = [_updated_with(client, case) for case in cases]
    assert ours == theirs
    return ours


def test_item_sizes_kept_during_an_update_refuse_and_keep_what_moto_s_own_check_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """120 updates of items near moto's 405,000-byte limit: the same items (moto leaves the
    actions before the refused one applied, and so do we) and the same errors as moto's own
    check of the whole item at every assignment."""
    rng = random.Random(11)
    cases = [_near_the_size_limit(rng) for _ in range(120)]
    ours = _ours_equal_moto_s_own(monkeypatch, cases)
    refused = sum(isinstance(found, tuple) for found in ours)
    assert 20 <= refused <= 100, refused  # both sides of the limit are met


def test_an_update_that_fills_an_item_to_moto_s_limit_exactly_is_kept_one_byte_more_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two SETs in one update (the second checked against the kept total) taking the item to
    moto's limit exactly, and to one byte over it, or the same over one byte less room: the
    items and errors of moto's own check, the item kept at the limit and refused past it."""

    def size(**attrs: dict[str, str]) -> int:  # moto's count for these attributes
        return sum(len(key) + DynamoType(value).size() for key, value in attrs.items())

    item = {"pk": {"S": "case"}, "a0": {"S": "x" * 150_000}}
    first = {"S": "y" * 150_000}
    room = motofix.ITEM_SIZE_LIMIT - size(**item, a1=first) - len("a2")
    cases = [
        (item, "SET a1 = :s0, a2 = :s1", {":s0": first, ":s1": {"S": "z" * (room + extra)}})
        for extra in (0, 1, -1)
    ]
    ours = _ours_equal_moto_s_own(monkeypatch, cases)
    assert [isinstance(found, tuple) for found in ours] == [False, True, False]
    assert size(**ours[0]) == motofix.ITEM_SIZE_LIMIT


WALKER_ITEM = {"pk": {"S": "case"}, "a": {"N": "1"}, "m": {"L": [{"N": "5"}]},
               "t": {"S": "text"}, "ns": {"NS": ["1", "2"]}}  # fmt: skip
WALKER_VALUES = {":v": {"N": "7"}, ":e": {"S": ""}, ":str": {"S": "x"},
                 ":lst": {"L": [{"N": "8"}]}, ":set": {"NS": ["2"]}}  # fmt: skip
# Each of the validator's walkers has something to do in some of these (a function, a path
# (zz) that does not exist, arithmetic, a key, an empty string, a type mismatch) and nothing
# in others.
WALKER_UPDATES = [
    "SET q = zz + :v", "SET q = a + :v", "SET q = a - :v, r = :v REMOVE t",
    "SET q = if_not_exists(zz, :v)", "SET q = if_not_exists(a, :v) + :v",
    "SET q = list_append(m, :lst)", "SET q = list_append(zz, :lst)", "SET q = zz",
    "SET q = a + zz", "SET q = :v + :v", "SET pk = :str", "SET pk = :e", "SET a = :e",
    "ADD a :v", "ADD t :v", "ADD q :v", "DELETE ns :set", "REMOVE zz", "SET m[0] = :v",
    "SET q = m[0] + :v", "SET a = :str ADD q :v",
]  # fmt: skip


def test_walks_skipped_where_a_walker_has_nothing_to_do_give_moto_s_own_items_and_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moto.dynamodb.parsing import validators

    cases = [(WALKER_ITEM, expression, WALKER_VALUES) for expression in WALKER_UPDATES]
    with mock_aws():
        client = _table_t()
        ours = [_updated_with(client, case) for case in cases]
        monkeypatch.setattr(
            validators.Validator, "validate", validators.Validator.validate.__wrapped__
        )
        theirs = [_updated_with(client, case) for case in cases]
    assert ours == theirs
    assert sum(isinstance(found, tuple) for found in ours) == 7  # refused ones too


def test_a_json_error_is_built_as_moto_builds_it_without_the_xml_it_replaces() -> None:
    from moto.core import exceptions
    from moto.dynamodb import exceptions as dynamodb_errors

    built = [
        lambda: dynamodb_errors.ProvidedKeyDoesNotExist(),
        lambda: dynamodb_errors.MockValidationException("a message"),
        lambda: dynamodb_errors.ConditionalCheckFailed(),
        lambda: exceptions.JsonRESTError("SomeError", "json"),
        lambda: exceptions.AccessDeniedError("user", "action"),  # XML: built by moto's own code
    ]
    ours = [vars(make()) for make in built]
    original = exceptions._RESTError.__init__
    exceptions._RESTError.__init__ = original.__wrapped__  # type: ignore[method-assign]
    try:
        theirs = [vars(make()) for make in built]
    finally:
        exceptions._RESTError.__init__ = original  # type: ignore[method-assign]
    assert ours == theirs
    assert ours[-1]["description"].startswith("<?xml")


def test_a_tree_that_shares_a_node_is_copied_by_deepcopy_keeping_the_sharing() -> None:
    from moto.dynamodb.parsing import validators
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser

    tree = UpdateExpressionParser.make("SET a = :v, b = :w")
    assert _shape(validators.deepcopy(tree)) == _shape(tree)
    shared = tree.children[0]
    tree.children.append(shared)  # one node held twice
    copied = validators.deepcopy(tree)
    assert copied.children[0] is copied.children[-1] and copied.children[0] is not shared


# ---- S3: each object request atomic with respect to the others ------------------------------

RACE_BUCKET = "motofix-race"
SOURCE, TARGET = "staging/upload", "objects/sha256-of-it"
PAYLOAD = b"a content-addressed object\n" * 100
RACE_WAIT = 30.0  # a bound for a hung race, never reached when the test passes


@pytest.fixture
def s3() -> Iterator[Any]:
    """A moto S3 client with one bucket holding the source object."""
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=RACE_BUCKET)
        client.put_object(Bucket=RACE_BUCKET, Key=SOURCE, Body=PAYLOAD)
        yield client


@pytest.fixture
def stock_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's own S3 request handling, without the lock of ``motofix``."""
    for name in ("_key_response", "_bucket_response"):
        monkeypatch.setattr(S3Response, name, getattr(S3Response, name).__wrapped__)


def _race(
    monkeypatch: pytest.MonkeyPatch,
    owner: type,
    pause_after: str,
    first: Callable[[], Any],
    second: Callable[[], Any],
) -> tuple[dict[str, Any], list[str], bool]:
    """Runs ``first`` until ``owner.<pause_after>`` returned inside it and holds it there;
    then runs ``second`` until it is done or waits for ``motofix.S3_LOCK``, and lets ``first``
    go on. Returns each request's result or exception, the order in which they ended, and
    whether ``second`` was waiting for the lock when ``first`` was let go (once both run, which
    of the two clients gets its response first is a race: only the wait shows the order)."""
    original = getattr(owner, pause_after)
    reached, go = threading.Event(), threading.Event()
    outcomes: dict[str, Any] = {}
    ended: list[str] = []

    def paused(self: Any, *args: Any, **kwargs: Any) -> Any:
        found = original(self, *args, **kwargs)
        if threading.current_thread().name == "first" and not reached.is_set():
            reached.set()
            go.wait(RACE_WAIT)
        return found

    def run(name: str, request: Callable[[], Any]) -> None:
        try:
            outcomes[name] = request()
        except Exception as error:  # noqa: BLE001 - the test inspects it
            outcomes[name] = error
        ended.append(name)

    monkeypatch.setattr(owner, pause_after, paused)
    threads = [threading.Thread(target=run, args=(n, r), name=n) for n, r in [("first", first)]]
    threads[0].start()
    assert reached.wait(RACE_WAIT), "the first request never got to the pause"
    threads.append(threading.Thread(target=run, args=("second", second), name="second"))
    threads[1].start()
    deadline = time.monotonic() + RACE_WAIT
    while threads[1].is_alive() and not motofix.S3_LOCK.waiting:
        assert time.monotonic() < deadline, "the second request neither ended nor waited"
        time.sleep(0.001)
    waited = threads[1].is_alive()
    go.set()
    for thread in threads:
        thread.join(RACE_WAIT)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes, ended, waited


def _exists(client: Any, key: str) -> bool:
    try:
        client.head_object(Bucket=RACE_BUCKET, Key=key)
    except ClientError as error:
        assert error.response["Error"]["Code"] == "404"
        return False
    return True


def _copy(client: Any) -> Callable[[], Any]:
    source = {"Bucket": RACE_BUCKET, "Key": SOURCE}
    return lambda: client.copy_object(Bucket=RACE_BUCKET, Key=TARGET, CopySource=source)


def _deletes(client: Any) -> dict[str, Callable[[], Any]]:
    one = {"Objects": [{"Key": TARGET}]}
    return {
        "DeleteObject": lambda: client.delete_object(Bucket=RACE_BUCKET, Key=TARGET),
        "DeleteObjects": lambda: client.delete_objects(Bucket=RACE_BUCKET, Delete=one),
    }


def _complete_multipart(client: Any) -> Callable[[], Any]:
    def upload() -> Any:
        started = client.create_multipart_upload(Bucket=RACE_BUCKET, Key=TARGET)["UploadId"]
        part = client.upload_part(
            Bucket=RACE_BUCKET, Key=TARGET, UploadId=started, PartNumber=1, Body=PAYLOAD
        )
        return client.complete_multipart_upload(
            Bucket=RACE_BUCKET,
            Key=TARGET,
            UploadId=started,
            MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
        )

    return upload


def _writes(client: Any) -> dict[str, tuple[str, Callable[[], Any]]]:
    """Each request that creates TARGET, with the backend step after which it is paused (the
    object is in the bucket; the response is not built yet)."""
    return {
        "CopyObject": ("copy_object", _copy(client)),
        "PutObject": (
            "put_object",
            lambda: client.put_object(Bucket=RACE_BUCKET, Key=TARGET, Body=PAYLOAD),
        ),
        "CompleteMultipartUpload": ("put_object", _complete_multipart(client)),
    }


WRITES = ["CopyObject", "PutObject", "CompleteMultipartUpload"]
DELETES = ["DeleteObject", "DeleteObjects"]


@pytest.mark.parametrize("at_acl", [False, True], ids=["object-stored", "acl-set"])
@pytest.mark.parametrize("delete", DELETES)
@pytest.mark.parametrize("write", WRITES)
def test_a_delete_racing_a_write_of_the_same_key_waits_and_then_removes_the_object(
    s3: Any, monkeypatch: pytest.MonkeyPatch, write: str, delete: str, at_acl: bool
) -> None:
    """The garbage collector's delete arrives while moto builds the write's response from the
    object (paused once the object is stored, or later once its ACL is set): as in S3, the
    write completes and the later delete removes its object."""
    pause_after, request = _writes(s3)[write]
    owner: type = FakeKey if at_acl else S3Backend

    outcomes, ended, waited = _race(
        monkeypatch, owner, "set_acl" if at_acl else pause_after, request, _deletes(s3)[delete]
    )

    assert not isinstance(outcomes["first"], Exception), outcomes["first"]
    assert not isinstance(outcomes["second"], Exception), outcomes["second"]
    assert waited  # the delete waited for the whole write
    assert not _exists(s3, TARGET)
    assert s3.get_object(Bucket=RACE_BUCKET, Key=SOURCE)["Body"].read() == PAYLOAD


@pytest.mark.parametrize("write", ["CopyObject", "PutObject"])
def test_stock_moto_fails_a_write_whose_object_is_deleted_while_its_response_is_built(
    s3: Any, monkeypatch: pytest.MonkeyPatch, stock_s3: None, write: str
) -> None:
    """The race above without the lock: moto's delete closes the object's buffer and the
    write's response reads its ETag from it (the flaky garbage-collection test's error)."""
    _, request = _writes(s3)[write]

    outcomes, ended, waited = _race(
        monkeypatch, FakeKey, "set_acl", request, _deletes(s3)["DeleteObject"]
    )

    assert not waited and ended == ["second", "first"]
    assert isinstance(outcomes["first"], ValueError)
    assert "closed file" in str(outcomes["first"])


@pytest.mark.parametrize("write", WRITES)
def test_a_write_racing_a_delete_of_the_same_key_waits_and_then_leaves_its_object(
    s3: Any, monkeypatch: pytest.MonkeyPatch, write: str
) -> None:
    """The other order: the delete is under way when the write arrives; the object the write
    made is there afterwards, with its bytes."""
    s3.put_object(Bucket=RACE_BUCKET, Key=TARGET, Body=b"the object before")
    _, request = _writes(s3)[write]

    outcomes, ended, waited = _race(
        monkeypatch, S3Backend, "delete_object", _deletes(s3)["DeleteObject"], request
    )

    assert not isinstance(outcomes["first"], Exception), outcomes["first"]
    assert not isinstance(outcomes["second"], Exception), outcomes["second"]
    assert waited
    assert s3.get_object(Bucket=RACE_BUCKET, Key=TARGET)["Body"].read() == PAYLOAD


def _read(client: Any, key: str) -> Callable[[], bytes]:
    return lambda: client.get_object(Bucket=RACE_BUCKET, Key=key)["Body"].read()


def _delete_racing_a_read(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], list[str], bool]:
    """Deletes SOURCE while a GetObject of it is inside moto's key read."""
    return _race(
        monkeypatch,
        S3Response,
        "_get_key",
        _read(s3, SOURCE),
        lambda: s3.delete_object(Bucket=RACE_BUCKET, Key=SOURCE),
    )


def test_a_delete_racing_a_read_waits_and_the_read_gets_the_whole_object(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes, ended, waited = _delete_racing_a_read(s3, monkeypatch)

    assert outcomes["first"] == PAYLOAD
    assert waited
    assert not _exists(s3, SOURCE)


def test_stock_moto_fails_a_read_whose_object_is_deleted_while_it_is_read(
    s3: Any, monkeypatch: pytest.MonkeyPatch, stock_s3: None
) -> None:
    outcomes, ended, waited = _delete_racing_a_read(s3, monkeypatch)

    assert not waited and ended == ["second", "first"]
    assert isinstance(outcomes["first"], ValueError)


def test_reads_and_upload_parts_go_on_while_a_read_is_under_way(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads share the lock and UploadPart does not take it: neither waits for a read."""
    s3.put_object(Bucket=RACE_BUCKET, Key=TARGET, Body=b"another object")
    started = s3.create_multipart_upload(Bucket=RACE_BUCKET, Key="big")["UploadId"]

    def read_and_upload() -> bytes:
        s3.upload_part(Bucket=RACE_BUCKET, Key="big", UploadId=started, PartNumber=1, Body=PAYLOAD)
        return _read(s3, TARGET)()

    outcomes, ended, waited = _race(
        monkeypatch, S3Response, "_get_key", _read(s3, SOURCE), read_and_upload
    )

    assert not waited and ended == ["second", "first"]
    assert outcomes == {"first": PAYLOAD, "second": b"another object"}


def test_upload_parts_go_on_while_a_write_holds_the_lock(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ingest's parallel multipart parts are never held up by other uploads' writes."""
    started = s3.create_multipart_upload(Bucket=RACE_BUCKET, Key="big")["UploadId"]

    def upload_part() -> Any:
        return s3.upload_part(
            Bucket=RACE_BUCKET, Key="big", UploadId=started, PartNumber=1, Body=PAYLOAD
        )

    outcomes, ended, waited = _race(monkeypatch, S3Backend, "copy_object", _copy(s3), upload_part)

    assert not waited and ended == ["second", "first"]
    assert not isinstance(outcomes["second"], Exception), outcomes["second"]
    assert _exists(s3, TARGET)


def test_the_s3_lock_is_reentrant_but_refuses_an_upgrade() -> None:
    lock = motofix.SharedExclusiveLock()
    with lock.exclusive(), lock.exclusive(), lock.shared():
        pass
    with lock.shared(), lock.shared(), pytest.raises(RuntimeError), lock.exclusive():
        pass
    taken = threading.Event()

    def take() -> None:
        with lock.exclusive():
            taken.set()

    other = threading.Thread(target=take)  # everything above was released
    other.start()
    other.join(RACE_WAIT)
    assert taken.is_set()
    assert lock.waiting == 0


def test_s3_requests_are_wrapped_once() -> None:
    motofix.install()

    for name in ("_key_response", "_bucket_response"):
        wrapped = getattr(S3Response, name)
        assert wrapped._atomic
        assert not getattr(wrapped.__wrapped__, "_atomic", False)


# --- responses --------------------------------------------------------------------------------

# Attribute names that are spellings moto's picker tries (a member's name, its snake_case, a
# shape's name): as names of an item's attributes they must stay attributes, never members.
SPELLINGS = ("S", "s", "N", "L", "l", "M", "NULL", "null", "BOOL", "ListAttributeValue", "a.b")


def _attribute_value(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    kinds = ["S", "N", "B", "BOOL", "NULL", "SS", "NS", "BS"] + (["M", "L"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "S":
        return {"S": rng.choice(SPELLINGS + ("", "x" * rng.randint(1, 40)))}
    if kind == "N":
        return {"N": str(rng.choice([0, -3, 12.5, 10**20, Decimal("1e-9")]))}
    if kind == "B":
        return {"B": rng.randbytes(rng.randint(1, 12))}
    if kind == "BOOL":
        return {"BOOL": rng.random() < 0.5}
    if kind == "NULL":
        return {"NULL": True}
    if kind == "SS":
        return {"SS": sorted({rng.choice(SPELLINGS) for _ in range(3)})}
    if kind == "NS":
        return {"NS": sorted({str(rng.randint(-50, 50)) for _ in range(3)})}
    if kind == "BS":
        return {"BS": list({rng.randbytes(4) for _ in range(2)})}
    count = rng.randint(0, 4)
    if kind == "M":
        names = rng.sample(SPELLINGS, count)
        return {"M": {name: _attribute_value(rng, depth + 1) for name in names}}
    return {"L": [_attribute_value(rng, depth + 1) for _ in range(count)]}


def _responses(client: Any, rng: random.Random) -> list[str]:
    """The raw bodies moto answers to reads and writes of random items (and to errors)."""
    bodies: list[str] = []

    def keep(http_response: Any, **_: Any) -> None:
        # the table's creation time and id differ between the two runs
        bodies.append(re.sub(r'("\w*(DateTime|TableId)": )[^,}]+', r"\1_", http_response.text))

    client.meta.events.register("after-call.dynamodb", keep)
    client.create_table(
        TableName="spellings",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for number in range(60):
        item = {name: _attribute_value(rng) for name in rng.sample(SPELLINGS, 5)}
        item["pk"] = {"S": f"item-{number}"}
        client.put_item(TableName="spellings", Item=item, ReturnValues="ALL_OLD")
        client.put_item(TableName="spellings", Item=item, ReturnValues="ALL_OLD")
        client.get_item(TableName="spellings", Key={"pk": item["pk"]})
    client.scan(TableName="spellings", ReturnConsumedCapacity="TOTAL")
    keys = [{"pk": {"S": f"item-{number}"}} for number in range(0, 60, 7)]
    client.batch_get_item(RequestItems={"spellings": {"Keys": keys}})
    client.describe_table(TableName="spellings")
    client.list_tables()
    with pytest.raises(ClientError):
        client.get_item(TableName="missing", Key={"pk": {"S": "x"}})
    with pytest.raises(ClientError):
        client.put_item(
            TableName="spellings",
            Item={"pk": {"S": "item-1"}},
            ConditionExpression="attribute_not_exists(pk)",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    return bodies


def test_json_responses_built_from_remembered_spellings_are_moto_s_own_bodies() -> None:
    from moto.core.serialize import JSONSerializer

    with mock_aws():
        ours = _responses(boto3.client("dynamodb", region_name="us-east-1"), random.Random(9))
    patched = JSONSerializer._serialize_structure_member
    JSONSerializer._serialize_structure_member = patched.__wrapped__  # type: ignore[method-assign]
    try:
        with mock_aws():
            theirs = _responses(boto3.client("dynamodb", region_name="us-east-1"), random.Random(9))
    finally:
        JSONSerializer._serialize_structure_member = patched  # type: ignore[method-assign]
    assert ours == theirs
    assert len(ours) == 1 + 60 * 3 + 6
    assert sum('"ListAttributeValue"' in body for body in ours) > 10  # names stay names
    assert sum('"L": [' in body for body in ours) > 10 and '"Item": {' in ours[3]
