"""Step 1: upload the raw export through a presigned URL, let the S3 trigger version it, clean it
and split it with declarative transformations, and show the lineage."""

from __future__ import annotations

import hashlib
import random
import time
from typing import Any

import requests

from demo.client import poll
from demo.data import TARGET, Frame, RawExport, cleaning_specs, parse_frame, raw_export, snake
from demo.story import Context

ROUTES = [
    ("POST", "/datasets"),
    ("POST", "/datasets/{}/uploads"),
    ("GET", "/datasets/{}/versions"),
    ("POST", "/datasets/{}/transformations"),
    ("GET", "/datasets/{}/versions/{}/content"),
    ("GET", "/lineage/{}"),
]
SPLIT_SEED = 42
TEST_FRACTION = 0.25


def _versions(ctx: Context, dataset_id: str) -> list[dict[str, Any]]:
    found = ctx.api.get(f"/datasets/{dataset_id}/versions", limit=100)
    return found["versions"]


def _upload(ctx: Context, dataset_id: str, raw: RawExport) -> dict[str, Any]:
    digest = hashlib.sha256(raw.content).hexdigest()
    body = {"filename": "breast_cancer_raw.csv", "sha256": digest}
    upload = ctx.api.post(f"/datasets/{dataset_id}/uploads", body)
    key = upload.get("key") or upload.get("upload_key")
    ctx.say(
        f"  declared sha256 {digest[:12]}…: {upload.get('mode')} presigned PUT for s3://…/{key}"
        f" (expires in {upload.get('expires_in')} s)"
    )
    started = time.monotonic()
    if upload.get("status") != "exists":
        headers = upload.get("headers") or {}
        put = requests.put(upload["url"], data=raw.content, headers=headers, timeout=60)
        put.raise_for_status()
    ctx.say(f"  uploaded {len(raw.content):,} bytes straight to S3; waiting for the S3 trigger…")
    version = poll(
        lambda: next(iter(_versions(ctx, dataset_id)), None),
        limit=60,
        pause=0.25,
        what="the S3-triggered version",
    )
    waited = time.monotonic() - started
    ctx.say(
        f"  version {version['version_number']} created by {version.get('created_by')} after "
        f"{waited:.1f} s: {version.get('row_count')} rows, sha256 {version['sha256'][:12]}…"
    )
    return {**version, "trigger_seconds": waited, "upload_key": key}


def _transform(
    ctx: Context,
    dataset_id: str,
    spec: dict[str, Any],
    sources: list[str],
    outputs: dict[str, str] | None = None,
) -> dict[str, Any]:
    body = {
        "transformation": spec,
        "source_version_ids": sources,
        "output_dataset_ids": outputs or {},
    }
    return ctx.api.post(f"/datasets/{dataset_id}/transformations", body)


def _content(ctx: Context, dataset_id: str, version_number: int) -> bytes:
    found = ctx.api.get(f"/datasets/{dataset_id}/versions/{version_number}/content")
    response = requests.get(found["url"], timeout=60)
    response.raise_for_status()
    return response.content


def _dataset(ctx: Context, role: str, description: str, compatibility: str) -> dict[str, Any]:
    body = {
        "name": f"breast-cancer-{role}-{ctx.suffix}",
        "description": description,
        "format": "csv",
        "compatibility": compatibility,
    }
    found = ctx.api.post("/datasets", body)
    ctx.say(f"  dataset {found['name']} ({found['dataset_id']}, {compatibility} compatibility)")
    return found


def _describe(version: dict[str, Any]) -> str:
    schema = version.get("schema") or {}
    return (
        f"v{version['version_number']}: {version.get('row_count')} rows, "
        f"{len(schema.get('columns', {}))} columns ({len(schema.get('nullable', []))} nullable), "
        f"sha256 {version['sha256'][:12]}…"
    )


def _clean(
    ctx: Context, raw: RawExport, raw_version: dict[str, Any], clean_id: str
) -> list[dict[str, Any]]:
    """Map (select + rename) into the clean dataset, then filter out incomplete rows there."""
    map_spec, filter_spec = cleaning_specs(raw)
    chain = []
    source = raw_version
    for spec in (map_spec, filter_spec):
        applied = _transform(ctx, clean_id, spec, [source["version_id"]], {"output": clean_id})
        source = applied["outputs"]["output"]
        record = {k: v for k, v in applied.items() if k != "outputs"}
        chain.append({"type": spec["type"], "version": source, "record": record})
        ctx.say(f"  {spec['type']:<6} → clean {_describe(source)}")
    return chain


def _edge_text(names: dict[str, str], edge: dict[str, Any]) -> str:
    return (
        f"  {names.get(edge['parent_id'], edge['parent_id'])} --{edge.get('transformation_type')}"
        f"--> {names.get(edge['child_id'], edge['child_id'])}"
    )


def _lineage(ctx: Context, version_id: str, names: dict[str, str]) -> dict[str, Any]:
    found = ctx.api.get(f"/lineage/{version_id}", direction="downstream")["downstream"]
    ctx.say("  lineage downstream of the raw upload (GET /lineage/{id}?direction=downstream):")
    for edge in found["edges"]:
        ctx.say(_edge_text(names, edge))
    return found


def via_service(ctx: Context) -> None:
    """The full data step through the dataversion API."""
    ctx.need_routes("the dataset versioning service", ROUTES)
    raw = raw_export()
    ctx.say(
        f"  raw export: {raw.rows} rows × {len(raw.columns)} columns; the demo blanked one cell "
        f"in {raw.blanked_rows} rows so that cleaning has something to remove"
    )
    raw_ds = _dataset(ctx, "raw", "Wisconsin breast cancer (scikit-learn), raw export", "backward")
    clean_ds = _dataset(
        ctx,
        "clean",
        "snake_case columns, complete rows (forward: a column may become required)",
        "forward",
    )
    train_ds = _dataset(ctx, "train", "training split of the clean data", "backward")
    test_ds = _dataset(ctx, "test", "test split of the clean data", "backward")
    raw_version = _upload(ctx, raw_ds["dataset_id"], raw)
    ctx.say(f"  raw {_describe(raw_version)}")
    chain = _clean(ctx, raw, raw_version, clean_ds["dataset_id"])
    clean = chain[-1]["version"]
    split_spec = {"type": "split", "seed": SPLIT_SEED, "test_fraction": TEST_FRACTION}
    outputs = {"train": train_ds["dataset_id"], "test": test_ds["dataset_id"]}
    applied = _transform(ctx, clean_ds["dataset_id"], split_spec, [clean["version_id"]], outputs)
    split = applied["outputs"]
    ctx.say(f"  split  → train {_describe(split['train'])}; test {_describe(split['test'])}")
    compare = ctx.api.get(
        f"/datasets/{clean_ds['dataset_id']}/compare",
        a=str(chain[0]["version"]["version_number"]),
        b=str(clean["version_number"]),
    )
    ctx.say(
        f"  compare clean v1 → v2: rows {compare['row_count']}, "
        f"schema changes {compare['schema'].get('changes', compare['schema'])}"
    )
    short = {
        raw_ds["dataset_id"]: "raw",
        clean_ds["dataset_id"]: "clean",
        train_ds["dataset_id"]: "train",
        test_ds["dataset_id"]: "test",
    }
    versions = [raw_version, *(step["version"] for step in chain), *split.values()]
    names = {v["version_id"]: f"{short[v['dataset_id']]} v{v['version_number']}" for v in versions}
    lineage = _lineage(ctx, raw_version["version_id"], names)
    reproducible = ctx.api.get(f"/versions/{split['train']['version_id']}/reproducibility")
    ctx.say(
        f"  train v1 reproducible from its root: {reproducible['reproducible']} "
        f"({len(reproducible.get('steps', []))} recorded steps)"
    )
    train = parse_frame(_content(ctx, train_ds["dataset_id"], split["train"]["version_number"]))
    test = parse_frame(_content(ctx, test_ds["dataset_id"], split["test"]["version_number"]))
    ctx.shared.update(train=train, test=test, train_version=split["train"])
    ctx.results["data"] = {
        "via_service": True,
        "datasets": {"raw": raw_ds, "clean": clean_ds, "train": train_ds, "test": test_ds},
        "raw_rows_in_file": raw.rows,
        "blanked_rows": raw.blanked_rows,
        "raw": raw_version,
        "chain": chain,
        "split": split,
        "compare": compare,
        "lineage": lineage,
        "names": names,
        "reproducibility": reproducible,
        "train_rows": len(train.y),
        "test_rows": len(test.y),
    }


def local_fallback(ctx: Context) -> None:
    """Without the dataversion service: the same cleaning and split done in the demo process."""
    raw = raw_export()
    text = raw.content.decode().splitlines()
    header, rows = text[0].split(","), [line.split(",") for line in text[1:]]
    keep = [r for r in rows if all(cell != "" for cell in r)]
    features = raw.feature_columns
    lines = [",".join([*(snake(c) for c in features), TARGET])]
    lines += [",".join(r[1 : 1 + len(features)] + [r[header.index(TARGET)]]) for r in keep]
    frame = parse_frame("\n".join(lines).encode())
    order = list(range(len(frame.y)))
    random.Random(SPLIT_SEED).shuffle(order)
    cut = round(len(order) * TEST_FRACTION)
    test_rows, train_rows = sorted(order[:cut]), sorted(order[cut:])

    def subset(indexes: list[int]) -> Frame:
        return Frame(
            frame.feature_names, [frame.X[i] for i in indexes], [frame.y[i] for i in indexes]
        )

    ctx.shared.update(train=subset(train_rows), test=subset(test_rows), train_version=None)
    ctx.say(
        f"  (local fallback) {len(keep)} complete rows; train {len(train_rows)}, "
        f"test {len(test_rows)} — not versioned"
    )


def run(ctx: Context) -> None:
    """Step 1 (falls back to a local split so later steps can run, and reports the skip)."""
    try:
        via_service(ctx)
    except Exception:
        local_fallback(ctx)
        raise
