"""Fixes to moto for the local stack and the tests: atomic DynamoDB and S3 requests,
transactions that cost what they touch, and no moto object kept alive after moto dropped it.

**Atomicity.** moto applies a conditional write or a transaction as several unlocked Python steps,
so two threads of the moto server could both pass the same condition: lost updates that real
DynamoDB, which applies each request atomically, cannot produce. :func:`install` serializes
moto's DynamoDB request handling (one request at a time inside moto; the app is not serialized).

**S3 atomicity.** moto's S3 is not thread-safe either: a DeleteObject (or DeleteObjects, or a
PutObject replacing the object) closes the deleted object's buffer at once, so a CopyObject,
PutObject or CompleteMultipartUpload still building its response from that object, or a
GetObject still reading it, failed with ``ValueError: I/O operation on closed file`` (the
garbage collector of dataset versions racing with uploads did). Real S3 applies each request
atomically: a copy completes, a later delete removes its object. :func:`install` makes moto's
S3 object and bucket requests atomic with respect to each other with one lock
(:data:`S3_LOCK`): a request that changes a bucket's keys holds it alone, reads (GetObject,
HeadObject, listings, UploadPartCopy's source) hold it together, and UploadPart, which only
touches its own upload's part, does not take it, so parallel parts of a multipart upload (the
ingest benchmark's 1 GiB files) stay parallel.

**Transactions.** moto's ``transact_write_items`` backs up every table it writes to with
``copy.deepcopy(table)`` (once per *action*), so that it can put the backup in place when an
action fails. A batch of outcomes writes up to 98 dedup items, so each ``POST .../outcomes``
copied the whole dedup table: the time of a post grew with every outcome already stored.
:func:`install` replaces the table copies with an undo log of the items the transaction names
(at most 100, copied before any action runs) and restores exactly those on failure: the same
all-or-nothing result, at a cost that no longer depends on the table's size. A table with a
stream also gets its stream records of the failed transaction dropped, as moto's backup did.

**Memory.** Every moto model object (``BaseModel``: DynamoDB items and tables, S3 keys, SQS
messages, ...) is appended to a class-level ``instances_tracked`` list when created, only so
that moto's dashboard (``/moto-api/data.json``) can list it; nothing ever removes it. Each item
copy above, each replaced or deleted item, each deleted S3 object and its bytes stayed in memory
for the life of the process: the local stack's RSS grew quadratically with the outcomes posted
(2.5 GB after 20,000). :func:`install` stops that tracking, so moto's objects live as long as
moto uses them (moto's dashboard lists no instances as a consequence).

**Parsing.** moto parses a condition expression from scratch each time it meets it, three times
per conditional put of a transaction (validation, the transaction's check, the put itself): a
third of the cost of an outcome post. :func:`install` remembers the syntax trees of recent
(expression, names, values) triples; a tree is immutable once built, so a remembered one
evaluates exactly like a new one.

**Update expressions.** Every node of moto's update-expression tree (each action, path and
value) is an ``UpdateExpression``, and two validators (one clause per kind; no path set twice or
overlapping) gather the whole subtree below *every* node: quadratic in the actions, 85 s of
moto's time for a batch of 600 outcomes with three segment dimensions. :func:`install` runs each
check once on the whole expression; a subtree's actions are a subset of the whole's and both
checks can only fail on more actions, so a passing whole means every subtree passes. When the
whole fails, moto's own traversal runs and raises exactly the error moto raises.

moto also parses an update expression from scratch each time it meets it, twice per update of a
transaction (the request's checks, then the update itself); :func:`install` remembers the trees
of recent update expressions as it does conditions. moto only reads a parsed tree: its
validator works on a deep copy, and the request checks only search it.

**Walks, copies and errors.** Validating an update, moto deep-copies its tree and walks it
ten times, asking each walker for a new node map at every node; and its executor raises and
catches an error for every ``ADD``/``SET`` of an attribute the item does not have yet, each
error rendering an XML body that its JSON class replaces at once. :func:`install` walks with one
map per walk, copies a plain tree node by node (anything else by ``copy.deepcopy``) and gives a
JSON error its JSON body straight away: 150 updates of 70 ``ADD`` actions took 2.3 s of CPU
instead of 3.4 s, with moto's own items and errors (tested on random updates against moto's
walk, copy and error construction).

The walk asks abc whether a node is a ``Node`` (an ABC) once per class, makes no call for a
child that is no node, or a leaf without a handler, when the walker has no hook (moto's walk
visits it and changes nothing), and a validator skips a walker whose handled classes the tree
does not hold (an ``ADD``-only update has nothing for five of the ten: tested on updates that
give each walker work, and nothing, against moto's own validation). moto's item-size check
sums the whole item at every assignment: while one update expression executes, :func:`install`
keeps the item's running total when all its values are scalars (nothing changes them in place)
and checks each assignment against it as moto does, with moto's items and errors at and over
the limit (tested against moto's own check on updates of items near it).

**Revisions.** An item changes in place only through ``update_item``; :func:`install` stamps the
item it updates with a new :func:`item_revision`, so the local stack's snapshots serialize an
item again only when it changed (:mod:`synapse_local.persistence`).

**End of request.** :data:`AFTER_REQUEST` hooks run after every DynamoDB request, still inside
the lock: the local stack's tables kept in SQLite write back what the request changed
(:mod:`synapse_local.diskitems`).

It only touches moto (the local stand-in for AWS), never the app; the tests install it
(``tests/conftest.py``) and so does every :class:`~synapse_local.stack.LocalStack` (``make
run``, the demo, the benches).

**Responses.** moto builds every JSON response (DynamoDB's, EventBridge's, ...) by walking the
operation's output shape and asking its attribute picker, for every member of every structure,
which of up to eight spellings of the member's name the value holds: about 180 lookups for one
item, as many ``AttributeValue`` structures as the item has values, each trying ten members.
That was a third of the CPU of the HTTP tests. For a plain ``dict`` the spellings depend only on
the shapes (never on the dict's contents), so :func:`install` asks the picker once per member
and then looks the same spellings up, in the same order, in every dict: the same members, the
same values, the same body (tested against moto's own picker on random items and real responses).

**Numbers.** moto writes the sum of an ``ADD`` with ``str(Decimal)`` (``9E-10``) and then reads
a number without a ``.`` as an ``int``: the next ``ADD`` failed. :func:`install` writes sums in
plain notation, as DynamoDB stores them.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

_state = threading.local()


class _TableCopyAsIs:
    """Stands in for the ``copy`` module inside ``moto.dynamodb.models``.

    Inside an undo-logged transaction (see :class:`_UndoLog`) a table's "backup" is the live
    table itself, so moto's own rollback (putting the backup in place) changes nothing and the
    undo log restores the items instead.
    """

    def __init__(self, table_type: type) -> None:
        self._table_type = table_type

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)

    def deepcopy(self, obj: Any, memo: Any = None) -> Any:
        if getattr(_state, "undo_logged", False) and isinstance(obj, self._table_type):
            return obj
        return copy.deepcopy(obj, memo)


def _key_values(table: Any, key: dict[str, Any]) -> tuple[Any, Any] | None:
    """The (hash, range) ``DynamoType`` values of a key, or ``None`` when it is malformed
    (moto then fails that action without writing anything)."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    try:
        hash_value = DynamoType(key[table.hash_key_attr])
        range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
    except (KeyError, TypeError, AttributeError, ValueError):
        return None
    return hash_value, range_value


def _stored(table: Any, hash_value: Any, range_value: Any) -> Any:
    """The item under a key, without creating anything (``table.items`` is a defaultdict)."""
    if range_value is None:
        return table.items.get(hash_value)
    return table.items.get(hash_value, {}).get(range_value)


def _put_back(table: Any, hash_value: Any, range_value: Any, item: Any) -> None:
    """Makes the item under a key ``item`` again (``None``: no item)."""
    if range_value is None:
        if item is None:
            table.items.pop(hash_value, None)
        else:
            table.items[hash_value] = item
        return
    if item is not None:
        table.items[hash_value][range_value] = item
        return
    bucket = table.items.get(hash_value)
    if bucket is not None:
        bucket.pop(range_value, None)
        if not bucket:
            table.items.pop(hash_value, None)


class _UndoLog:
    """The items a transaction names, as they were before it, and the tables' stream lengths.

    Args:
        backend: moto's ``DynamoDBBackend``.
        transact_items: The ``TransactItems`` of the request.
    """

    def __init__(self, backend: Any, transact_items: list[dict[str, Any]]) -> None:
        self._items: list[tuple[Any, Any, Any, Any]] = []
        self._streams: dict[int, tuple[Any, int]] = {}
        for action in transact_items:
            self._remember(backend, action)

    def _remember(self, backend: Any, action: Any) -> None:
        if not isinstance(action, dict) or len(action) != 1:
            return
        ((op_type, op),) = action.items()
        table = backend.tables.get(op.get("TableName")) if isinstance(op, dict) else None
        if table is None:
            return
        key = op.get("Item") if op_type == "Put" else op.get("Key")
        located = _key_values(table, key) if isinstance(key, dict) else None
        if located is None:
            return
        before = _stored(table, *located)
        self._items.append((table, *located, None if before is None else copy.deepcopy(before)))
        shard = table.stream_shard
        if shard is not None and id(table) not in self._streams:
            self._streams[id(table)] = (shard, len(shard.items))

    @property
    def size(self) -> int:
        """How many item states are kept."""
        return len(self._items)

    def restore(self) -> None:
        """Puts every named item back as it was (the first state wins for a repeated key)."""
        for table, hash_value, range_value, item in reversed(self._items):
            _put_back(table, hash_value, range_value, item)
        for shard, length in self._streams.values():
            del shard.items[length:]


def _undo_logged_transactions() -> bool:
    from moto.dynamodb import models

    original = models.DynamoDBBackend.transact_write_items
    if getattr(original, "_undo_logged", False):
        return False

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        undo = _UndoLog(self, transact_items) if len(transact_items) <= 100 else None
        _state.undo_logged = True
        try:
            return original(self, transact_items)
        except BaseException:
            if undo is not None:
                undo.restore()
            raise
        finally:
            _state.undo_logged = False

    transact_write_items._undo_logged = True  # type: ignore[attr-defined]
    transact_write_items.__wrapped__ = original  # type: ignore[attr-defined]
    models.copy = _TableCopyAsIs(models.Table)  # type: ignore[assignment]
    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    return True


# Called at the end of every DynamoDB request, still under DYNAMODB_LOCK (the local stack's
# SQLite-kept tables write back what the request changed: synapse_local.diskitems).
AFTER_REQUEST: list[Callable[[], None]] = []

# Held by every DynamoDB request inside moto (and by the local stack's snapshots, which read
# moto's tables directly and so see them between two requests, never during one).
DYNAMODB_LOCK = threading.RLock()


def _serialize_requests() -> None:
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action
    if getattr(original, "_serialized", False):
        return

    def call_action(self: Any) -> Any:
        with DYNAMODB_LOCK:
            try:
                return original(self)
            finally:
                for hook in AFTER_REQUEST:
                    hook()

    call_action._serialized = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]


class SharedExclusiveLock:
    """A lock held by many threads at a time on its shared side, or by one on its exclusive side.

    The exclusive side is reentrant, and a thread holding it may take the shared side too; a
    thread holding the shared side may take it again, but not the exclusive side (no upgrade:
    two such threads would wait for each other). A thread waiting for the exclusive side keeps
    new shared holders waiting, so a stream of reads cannot starve a write.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._sharing = 0
        self._writers_waiting = 0
        self._readers_waiting = 0
        self._shared = threading.local()

    @property
    def waiting(self) -> int:
        """How many threads wait for either side now."""
        with self._changed:
            return self._writers_waiting + self._readers_waiting

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Holds the exclusive side (no other thread holds either side meanwhile).

        Raises:
            RuntimeError: The thread holds the shared side only.
        """
        me = threading.get_ident()
        with self._changed:
            if self._owner != me:
                if getattr(self._shared, "depth", 0):
                    raise RuntimeError("a shared holder cannot take the exclusive side")
                self._writers_waiting += 1
                try:
                    self._changed.wait_for(lambda: self._owner is None and not self._sharing)
                finally:
                    self._writers_waiting -= 1
                self._owner = me
            self._depth += 1
        try:
            yield
        finally:
            with self._changed:
                self._depth -= 1
                if not self._depth:
                    self._owner = None
                    self._changed.notify_all()

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Holds the shared side (other threads may hold it too, none the exclusive side)."""
        me = threading.get_ident()
        depth = getattr(self._shared, "depth", 0)
        if depth or self._owner == me:  # already inside: waiting could only deadlock
            self._shared.depth = depth + 1
            try:
                yield
            finally:
                self._shared.depth -= 1
            return
        with self._changed:
            self._readers_waiting += 1
            try:
                self._changed.wait_for(lambda: self._owner is None and not self._writers_waiting)
            finally:
                self._readers_waiting -= 1
            self._sharing += 1
        self._shared.depth = 1
        try:
            yield
        finally:
            self._shared.depth = 0
            with self._changed:
                self._sharing -= 1
                if not self._sharing:
                    self._changed.notify_all()


# Taken by moto's S3 object requests: exclusive for those that change a bucket's keys (or the
# bucket), shared for those that read them; UploadPart takes neither (see _s3_side).
S3_LOCK = SharedExclusiveLock()
_EXCLUSIVE, _SHARED = "exclusive", "shared"


def _s3_side(method: str, full_url: str, headers: Any, key_request: bool) -> str | None:
    """Which side of :data:`S3_LOCK` an S3 request takes (``None``: none).

    UploadPart writes one part of an upload that no other request reads until its
    CompleteMultipartUpload, so parallel parts stay parallel. UploadPartCopy only reads its
    source object (shared). Reads (GET, HEAD) share; every other request that names a bucket
    changes its keys or the bucket and is exclusive.
    """
    if method in ("GET", "HEAD"):
        return _SHARED
    if method == "OPTIONS":
        return None
    if key_request and method == "PUT":
        query = urllib.parse.parse_qs(urllib.parse.urlparse(full_url).query)
        if query.get("uploadId") and query.get("partNumber"):
            return _SHARED if "x-amz-copy-source" in headers else None
    return _EXCLUSIVE


def _s3_atomic(original: Callable[..., Any], key_request: bool) -> Callable[..., Any]:
    def respond(self: Any, request: Any, full_url: str) -> Any:
        side = _s3_side(request.method, full_url, request.headers, key_request)
        if side is None:
            return original(self, request, full_url)
        with S3_LOCK.exclusive() if side == _EXCLUSIVE else S3_LOCK.shared():
            return original(self, request, full_url)

    respond._atomic = True  # type: ignore[attr-defined]
    respond.__wrapped__ = original  # type: ignore[attr-defined]
    return respond


def _atomic_s3_requests() -> None:
    """moto's S3 key and bucket requests, each under :data:`S3_LOCK` (see :func:`_s3_side`)."""
    from moto.s3.responses import S3Response

    for name, key_request in (("_key_response", True), ("_bucket_response", False)):
        original = getattr(S3Response, name)
        if not getattr(original, "_atomic", False):
            setattr(S3Response, name, _s3_atomic(original, key_request))


def _stop_instance_tracking() -> None:
    """moto's ``BaseModel.__new__`` without the append to ``instances_tracked``."""
    from moto.core.common_models import BaseModel

    if getattr(BaseModel.__new__, "_untracked", False):
        return

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:  # noqa: N807 - moto's hook
        return super(BaseModel, cls).__new__(cls)

    __new__._untracked = True  # type: ignore[attr-defined]
    BaseModel.__new__ = staticmethod(__new__)  # type: ignore[assignment,method-assign]


_REVISION = "_synapse_revision"
_revisions = itertools.count(1)


def item_revision(item: Any) -> int:
    """How many in-place updates stamped this item object (0: never updated in place)."""
    return item.__dict__.get(_REVISION, 0)


def _stamp(item: Any) -> None:
    if item is not None:
        item.__dict__[_REVISION] = next(_revisions)


def _stamped_updates() -> None:
    """``update_item`` stamps the item it changes, before (it may fail half-way) and after."""
    from moto.dynamodb import models

    original = models.DynamoDBBackend.update_item
    if getattr(original, "_stamps", False):
        return

    def update_item(self: Any, table_name: str, key: dict[str, Any], *args: Any, **kw: Any) -> Any:
        table = self.tables.get(table_name)
        located = _key_values(table, key) if table is not None and isinstance(key, dict) else None
        if located is not None:
            _stamp(_stored(table, *located))
        try:
            item = original(self, table_name, key, *args, **kw)
        finally:
            if located is not None:
                _stamp(_stored(table, *located))
        return item

    update_item._stamps = True  # type: ignore[attr-defined]
    models.DynamoDBBackend.update_item = update_item  # type: ignore[method-assign]


PARSED_EXPRESSIONS = 1024


def _parse_key(parser: Any) -> str | None:
    try:
        return json.dumps(
            [
                parser.condition_expression,
                parser.expression_attribute_names,
                parser.expression_attribute_values,
            ],
            sort_keys=True,
        )
    except (TypeError, ValueError):  # values JSON cannot express: parse every time
        return None


def _remember_parsed_conditions() -> None:
    """``ConditionExpressionParser.parse`` with an LRU of its results (errors are not kept)."""
    from moto.dynamodb.comparisons import ConditionExpressionParser

    original = ConditionExpressionParser.parse
    if getattr(original, "_remembered", False):
        return
    parsed: OrderedDict[str, tuple[Any, list[str], list[str]]] = OrderedDict()
    lock = threading.Lock()

    def parse(self: Any) -> Any:
        key = _parse_key(self)
        with lock:
            found = parsed.get(key) if key is not None else None
            if found is not None:
                parsed.move_to_end(key)
        if found is None:
            op = original(self)
            found = (op, list(self.expr_attr_names_found), list(self.expr_attr_values_found))
            if key is not None:
                with lock:
                    parsed[key] = found
                    if len(parsed) > PARSED_EXPRESSIONS:
                        parsed.popitem(last=False)
            return op
        op, names, values = found
        self.expr_attr_names_found.extend(names)
        self.expr_attr_values_found.extend(values)
        return op

    parse._remembered = True  # type: ignore[attr-defined]
    parse.__wrapped__ = original  # type: ignore[attr-defined]
    ConditionExpressionParser.parse = parse  # type: ignore[method-assign]


def _remember_parsed_updates() -> None:
    """``UpdateExpressionParser.make`` with an LRU of the trees it built (errors are not kept)."""
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser

    original = UpdateExpressionParser.make.__func__  # type: ignore[attr-defined]
    if getattr(original, "_remembered", False):
        return
    parsed: OrderedDict[str, Any] = OrderedDict()
    lock = threading.Lock()

    def make(cls: Any, expression_str: str) -> Any:
        with lock:
            found = parsed.get(expression_str)
            if found is not None:
                parsed.move_to_end(expression_str)
                return found
        tree = original(cls, expression_str)
        with lock:
            parsed[expression_str] = tree
            if len(parsed) > PARSED_EXPRESSIONS:
                parsed.popitem(last=False)
        return tree

    make._remembered = True  # type: ignore[attr-defined]
    make.__wrapped__ = original  # type: ignore[attr-defined]
    UpdateExpressionParser.make = classmethod(make)  # type: ignore[method-assign, assignment]


def _validate_update_expressions_once() -> None:
    """The clause-count and path-overlap checks of an update expression, once per expression."""
    from moto.dynamodb.parsing.ast_nodes import UpdateExpression
    from moto.dynamodb.parsing.validators import ActionCountValidator, OverlappingPathsValidator

    for validator in (ActionCountValidator, OverlappingPathsValidator):
        original = validator.traverse
        if getattr(original, "_once", False):
            continue

        def traverse(self: Any, node: Any, _original: Any = original) -> Any:
            if isinstance(node, UpdateExpression):
                try:
                    self._processing_map()[UpdateExpression](node)
                except Exception:  # moto's own walk names the offending part as moto does
                    return _original(self, node)
                return node
            return _original(self, node)

        traverse._once = True  # type: ignore[attr-defined]
        traverse.__wrapped__ = original  # type: ignore[attr-defined]
        validator.traverse = traverse  # type: ignore[method-assign]


_MOTO_WALK = ("traverse_node_recursively", "process", "nodes_to_be_processed")


_NOT_A_NODE = object()


def _handler_for(node: Any, handlers: tuple[tuple[type, Any], ...]) -> Any:
    """The handler moto's walk would call for ``node`` (``None``: none; :data:`_NOT_A_NODE`:
    not a node, which moto's walk passes over)."""
    if not _is_node(node):
        return _NOT_A_NODE
    return next((handler for kind, handler in handlers if isinstance(node, kind)), None)


class _Walk:
    """One walk of a moto walker over a tree: what ``DepthFirstTraverser.traverse`` does.

    Args:
        walker: The ``DepthFirstTraverser`` (its node map is asked for once).
        base: moto's ``DepthFirstTraverser`` class.
    """

    def __init__(self, walker: Any, base: type) -> None:
        self._handlers = tuple(walker._processing_map().items())
        self._before_child = walker.pre_processing_of_child
        if type(walker).pre_processing_of_child is base.pre_processing_of_child:
            self._before_child = None  # moto's hook does nothing
        # Node is an ABC: isinstance asks abc for every node; the answer depends only on the
        # node's class, so each walk asks once per class (the first matching handler, as moto).
        self._handler_of: dict[type, Any] = {}
        self._census: set[type] | None = getattr(_state, "census", None)

    def _handler(self, node: Any) -> Any:
        kind = type(node)
        if kind not in self._handler_of:
            self._handler_of[kind] = _handler_for(node, self._handlers)
        return self._handler_of[kind]

    def run(self, node: Any) -> Any:
        """Walks the tree under ``node`` depth first; returns the (maybe replaced) root."""
        found = self._handler(node)
        return node if found is _NOT_A_NODE else self._walk(node, -1, found)

    def _walk(self, node: Any, child_id: int, handler: Any) -> Any:
        parent_node = node.parent
        if node.children:
            self._walk_children(node)
        if handler is not None:
            node = handler(node)
            node.parent = parent_node
            if parent_node:
                parent_node.children[child_id] = node
            if self._census is not None:  # what the handler put in the tree
                _classes_in(node, self._census)
        return node

    def _walk_children(self, node: Any) -> None:
        # A child that is no node, or has no handler and no node below it (a leaf: its children
        # are tokens), is left as it is when the walker has no hook (moto's walk visits it and
        # changes nothing): no call for it.
        before_child, node_class = self._before_child, _NODE_CLASSES.__getitem__
        for i, child in enumerate(node.children):
            if before_child is not None:
                before_child(node, i)
            found = self._handler(child)
            if found is _NOT_A_NODE:
                continue
            below = child.children
            if found is not None or (
                below and (before_child is not None or any(map(node_class, map(type, below))))
            ):
                self._walk(child, i, found)


def _classes_in(node: Any, into: set[type]) -> None:
    """Adds the class of ``node`` and of everything below it to ``into``."""
    stack = [node]
    while stack:
        current = stack.pop()
        into.add(type(current))
        if _NODE_CLASSES[type(current)] and current.children:
            stack.extend(current.children)


def _has_work(walker: Any, census: set[type], base: type) -> bool:
    """Whether moto's walk of a tree holding only nodes of the ``census`` classes could call
    anything of ``walker``'s (a walker of its own making, or with a hook, always could)."""
    kind = type(walker)
    if kind.traverse is not base.traverse or any(
        getattr(kind, name) is not getattr(base, name)
        for name in (*_MOTO_WALK, "pre_processing_of_child")
    ):
        return True
    handled = tuple(walker._processing_map())
    return any(issubclass(found, handled) for found in census)


def _walks_with_work_only() -> None:
    """An update validator runs each of its ten walkers only when the tree holds a node the
    walker handles (or the walker has a hook of its own).

    A walker with moto's walk and no hook changes nothing and calls nothing in a tree without
    such a node (an ``ADD``-only update has no function, no ``SET`` action): its walk of every
    node is skipped. The classes in the tree are gathered once, and each walk adds what its
    handlers put in (:class:`_Walk`), so they are never fewer than the tree holds.
    """
    from moto.dynamodb.parsing.ast_nodes import DepthFirstTraverser
    from moto.dynamodb.parsing.validators import Validator

    original = Validator.validate
    if getattr(original, "_with_work", False):
        return

    def validate(self: Any) -> Any:
        census: set[type] = set()
        _classes_in(self.node_to_validate, census)
        outer = getattr(_state, "census", None)
        _state.census = census
        try:
            node = self.node_to_validate
            for walker in self.processors:
                if _has_work(walker, census, DepthFirstTraverser):
                    node = walker.traverse(node)
            return node
        finally:
            _state.census = outer

    validate._with_work = True  # type: ignore[attr-defined]
    validate.__wrapped__ = original  # type: ignore[attr-defined]
    Validator.validate = validate  # type: ignore[method-assign]


def _walk_with_one_map() -> None:
    """moto's depth-first walk of an expression tree, with the walker's node map built once.

    ``DepthFirstTraverser`` asks ``_processing_map()`` (a new dict each time) for every node it
    meets and again for every node it processes; an update of 70 actions meets ~5,000 nodes in
    each of its ten walks. This walk visits, calls ``pre_processing_of_child`` and replaces
    nodes exactly as moto's does, with one map per walk (the maps name fixed node classes).
    A walker that overrides a part of the walk keeps moto's own.
    """
    from moto.dynamodb.parsing.ast_nodes import DepthFirstTraverser

    original = DepthFirstTraverser.traverse
    if getattr(original, "_one_map", False):
        return

    def traverse(self: Any, node: Any) -> Any:
        cls = type(self)
        if any(getattr(cls, name) is not getattr(DepthFirstTraverser, name) for name in _MOTO_WALK):
            return original(self, node)
        return _Walk(self, DepthFirstTraverser).run(node)

    traverse._one_map = True  # type: ignore[attr-defined]
    traverse.__wrapped__ = original  # type: ignore[attr-defined]
    DepthFirstTraverser.traverse = traverse  # type: ignore[method-assign]


class _NotATree(Exception):
    """A node met twice, or whose ``parent`` is not the node holding it."""


class _NodeClasses(dict[type, bool]):
    """Whether a class is a moto ``Node``, asked of abc once per class (Node is an ABC)."""

    def __missing__(self, kind: type) -> bool:
        from moto.dynamodb.parsing.ast_nodes import Node

        found = self[kind] = issubclass(kind, Node)
        return found


_NODE_CLASSES = _NodeClasses()


def _is_node(value: Any) -> bool:
    """``isinstance(value, Node)``."""
    return _NODE_CLASSES[type(value)]


def _copy_tree(node: Any, parent: Any, memo: dict[int, Any]) -> Any:
    """A deep copy of an expression tree whose every node's ``parent`` is its holder: what
    ``copy.deepcopy`` makes of it, without its generic walk over every attribute."""
    if id(node) in memo:
        raise _NotATree
    twin = memo[id(node)] = object.__new__(type(node))
    for name, value in node.__dict__.items():
        if name == "children" and value is not None:
            copied = []
            for child in value:
                if _is_node(child):
                    if child.parent is not node:
                        raise _NotATree
                    copied.append(_copy_tree(child, twin, memo))
                else:
                    copied.append(copy.deepcopy(child, memo))
            value = copied
        elif name == "parent":
            value = parent
        elif name != "children":
            value = copy.deepcopy(value, memo)
        twin.__dict__[name] = value
    return twin


def _copy_update_trees_directly() -> None:
    """The update-expression validator's deep copy of the tree, by :func:`_copy_tree`.

    moto copies the (remembered) tree for every update it validates; ``copy.deepcopy`` took a
    quarter of moto's time for a batch of 1,000 outcomes with five metrics. Anything that is not
    a plain tree (a node shared, a root with a parent) is copied by ``copy.deepcopy``.
    """
    from moto.dynamodb.parsing import validators
    from moto.dynamodb.parsing.ast_nodes import Node

    original = validators.deepcopy
    if getattr(original, "_trees", False):
        return

    def deepcopy(value: Any, memo: Any = None) -> Any:
        if memo is None and isinstance(value, Node) and value.parent is None:
            try:
                return _copy_tree(value, None, {})
            except _NotATree:
                pass
        return original(value, memo)

    deepcopy._trees = True  # type: ignore[attr-defined]
    validators.deepcopy = deepcopy  # type: ignore[attr-defined]


def _json_errors_without_xml() -> None:
    """moto's JSON errors (every DynamoDB error) without the XML body they throw away.

    ``_RESTError.__init__`` renders an XML error document with xmltodict, which
    ``JsonRESTError.__init__`` replaces by its JSON one at once. moto's update executor raises
    and catches such an error for every ``ADD``/``SET`` to an attribute the item does not have
    yet: 30,000 XML renderings, a fifth of moto's time, for one wide batch of outcomes. A JSON
    error gets the JSON body and content type straight away; any other error is unchanged.
    """
    from moto.core import exceptions

    original = exceptions._RESTError.__init__
    if getattr(original, "_json_only", False):
        return

    def __init__(self: Any, error_type: str, message: str, _: str = "", **kwargs: Any) -> None:
        if not isinstance(self, exceptions.JsonRESTError):
            original(self, error_type, message, _, **kwargs)
            return
        exceptions.HTTPException.__init__(self)
        self.error_type = error_type
        self.message = message
        self.description = json.dumps({"__type": error_type, "message": message})
        self.content_type = "application/json"

    __init__._json_only = True  # type: ignore[attr-defined]
    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    exceptions._RESTError.__init__ = __init__  # type: ignore[method-assign]


def _plain_number_sums() -> None:
    """``ADD`` of numbers writes the sum in plain notation, as DynamoDB returns numbers.

    moto formats a Decimal sum with ``str`` (``0.0000000009`` becomes ``9E-10``) and reads an
    operand without a ``.`` as an ``int``, so the next ``ADD`` to that attribute failed with
    ``ValueError``: tiny sums of squares (a custom metric's segment moments) broke a counter."""
    from moto.dynamodb.models.dynamo_type import DDBType, DynamoType

    original = DynamoType.__add__
    if getattr(original, "_plain", False):
        return

    def __add__(self: Any, other: Any) -> Any:  # noqa: N807 - moto's operator
        total = original(self, other)
        text = total.value
        if "E" in text or "e" in text:
            total = DynamoType({DDBType.NUMBER: format(Decimal(text), "f")})
        return total

    __add__._plain = True  # type: ignore[attr-defined]
    DynamoType.__add__ = __add__  # type: ignore[method-assign]


# moto's item size limit (LimitedSizeDict.__setitem__), between DynamoDB's 400 KB and 410 KB.
ITEM_SIZE_LIMIT = 405000
_SCALAR_TYPES = frozenset({"S", "N", "B", "BOOL", "NULL"})


def _fixed_size(value: Any) -> bool:
    """Whether ``value`` is a scalar ``DynamoType`` whose size nothing changes in place."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    return (
        type(value) is DynamoType
        and value.type in _SCALAR_TYPES
        and isinstance(value.value, (str, bytes, bool))
    )


def _moto_size(value: Any) -> int:
    """The size moto's ``LimitedSizeDict`` counts for a key or a value."""
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.utilities import bytesize

    return int(value.size()) if type(value) is DynamoType else bytesize(str(value))


_MISSING = object()


def _set_counting(kept: dict[int, Any], attrs: Any, key: str, value: Any, too_large: Any) -> None:
    """moto's ``LimitedSizeDict.__setitem__`` with the item's total kept in ``kept``."""
    entry = kept.get(id(attrs))
    if entry is not None and entry[0] is attrs:
        current, fixed = entry[1], True
    else:
        current = sum(map(_moto_size, [*attrs.keys(), *attrs.values()]))
        fixed = all(map(_fixed_size, attrs.values()))
    if current + _moto_size(key) + _moto_size(value) > ITEM_SIZE_LIMIT:
        raise too_large
    old = dict.get(attrs, key, _MISSING)
    dict.__setitem__(attrs, key, value)
    if fixed and _fixed_size(value):
        grown = _moto_size(value) + (_moto_size(key) if old is _MISSING else -_moto_size(old))
        kept[id(attrs)] = (attrs, current + grown)
    else:
        kept.pop(id(attrs), None)


def _forgetting(method: Any) -> Any:
    """``method`` of dict, first forgetting the kept total of the dict it changes."""

    def forget(self: Any, *args: Any, **kwargs: Any) -> Any:
        kept = getattr(_state, "item_sizes", None)
        if kept is not None:
            kept.pop(id(self), None)
        return method(self, *args, **kwargs)

    forget.__wrapped__ = method  # type: ignore[attr-defined]
    return forget


def _item_sizes_kept_during_updates() -> None:
    """An update's executor checks the item's size once per action, not once per attribute.

    moto's ``LimitedSizeDict.__setitem__`` sums the size of every key and value of the item at
    each assignment: an update of 70 ``ADD``s to an item of 70 counters sized 10,000 values,
    a quarter of moto's time for a wide batch of outcomes. While one update expression
    executes (nothing else touches the item: moto's requests are serialized), this keeps the
    item's running total when every value is a scalar (a string, number, binary, bool or
    null ``DynamoType``, which nothing changes in place) and checks each assignment against it
    exactly as moto does; an item holding a map, list or set, a removal, or anything outside
    an update's execution counts as moto does.
    """
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.dynamo_type import LimitedSizeDict
    from moto.dynamodb.parsing.executors import UpdateExpressionExecutor

    original_set = LimitedSizeDict.__setitem__
    if getattr(original_set, "_kept", False):
        return
    original_execute = UpdateExpressionExecutor.execute

    def __setitem__(self: Any, key: str, value: Any) -> None:  # noqa: N807 - moto's operator
        kept = getattr(_state, "item_sizes", None)
        if kept is None:
            original_set(self, key, value)
        else:
            _set_counting(kept, self, key, value, ItemSizeTooLarge)

    def execute(self: Any, node: Any = None) -> None:
        if getattr(_state, "item_sizes", None) is not None:  # a child of the running update
            return original_execute(self, node)
        _state.item_sizes = {}
        try:
            return original_execute(self, node)
        finally:
            _state.item_sizes = None

    __setitem__._kept = True  # type: ignore[attr-defined]
    __setitem__.__wrapped__ = original_set  # type: ignore[attr-defined]
    execute.__wrapped__ = original_execute  # type: ignore[attr-defined]
    for name in ("__delitem__", "pop", "popitem", "clear", "update", "setdefault", "__ior__"):
        setattr(LimitedSizeDict, name, _forgetting(getattr(dict, name)))
    LimitedSizeDict.__setitem__ = __setitem__  # type: ignore[method-assign]
    UpdateExpressionExecutor.execute = execute  # type: ignore[method-assign]


def _structure_members_by_remembered_spellings() -> None:
    """moto's JSON serializer, looking a plain dict's members up by spellings asked once.

    moto's picker (``XFormedAttributePicker`` with its default alias providers and no response
    transformers, as every JSON response has) reads a dict only through ``obj[spelling]`` for
    each spelling in turn, the first present one winning; the spellings come from the member's
    name and shape, its parent's name and members, and the object's class (``dict``: no
    ``Meta``). Anything else (another picker, an object, a dict subclass, a spelling with a
    dot, which moto reads as a path) goes through moto's own code.
    """
    from moto.core import serialize

    serializer = serialize.JSONSerializer
    original = serializer._serialize_structure_member
    if getattr(original, "_remembered", False):
        return
    spellings: dict[tuple[str, str, str, str], tuple[str, ...] | None] = {}

    def _spellings(self: Any, picker: Any, shape: Any, parent: Any, key: str) -> Any:
        remembered = (self.service_model.service_name, parent.name, shape.name, key)
        if remembered not in spellings:
            context = serialize.AttributePickerContext(
                obj={},
                key=key,
                shape=shape,
                operation_model=self.operation_model,
                service_model=self.service_model,
            )
            found = tuple(picker.get_possible_keys(context))
            spellings[remembered] = None if any("." in name for name in found) else found
        return spellings[remembered]

    def _serialize_structure_member(
        self: Any, serialized: Any, value: Any, shape: Any, key: str
    ) -> None:
        picker = self._value_picker
        parent = getattr(shape, "parent", None)
        if (
            type(value) is not dict
            or type(self) is not serializer
            or type(picker) is not serialize.XFormedAttributePicker
            or picker.alias_providers is not serialize.DEFAULT_ALIAS_PROVIDERS
            or picker.response_transformers
            or parent is None
        ):
            return original(self, serialized, value, shape, key)
        names = _spellings(self, picker, shape, parent, key)
        if names is None:
            return original(self, serialized, value, shape, key)
        for name in names:
            if name in value:
                member_value = value[name]
                break
        else:
            return
        if member_value is not None:
            self._serialize(serialized, member_value, shape, key)

    _serialize_structure_member._remembered = True  # type: ignore[attr-defined]
    _serialize_structure_member.__wrapped__ = original  # type: ignore[attr-defined]
    serializer._serialize_structure_member = _serialize_structure_member  # type: ignore[method-assign]


def install() -> bool:
    """Patches moto (idempotent); returns whether the transaction fix was newly installed."""
    _plain_number_sums()
    _serialize_requests()
    _atomic_s3_requests()
    _stop_instance_tracking()
    _remember_parsed_conditions()
    _stamped_updates()
    _walk_with_one_map()
    _walks_with_work_only()
    _copy_update_trees_directly()
    _json_errors_without_xml()
    _validate_update_expressions_once()
    _remember_parsed_updates()
    _item_sizes_kept_during_updates()
    _structure_members_by_remembered_spellings()
    return _undo_logged_transactions()
