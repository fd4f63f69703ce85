"""``synapse``: the SynapseNet command line (over the public HTTP API only).

Exit codes:
    0  success
    1  the API refused the request (400, 409, 413, 422) or another client error
    2  wrong usage (unknown option, missing argument)
    3  not found (404: unknown id, or not visible to this token)
    4  not authenticated or not allowed (401, 403)
    5  the API could not be reached, or answered 429/503/5xx after every retry
    6  the server lacks a capability this command needs (an older server)
    7  bytes did not match their sha256 (pull)
    130 interrupted (Ctrl-C); a push or pull resumes when run again
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from synapse_client import config as config_file
from synapse_client.client import Client
from synapse_client.errors import SynapseClientError
from synapse_client.output import ProgressBar, dumps, human_bytes, pairs, table

EXIT_CODES = __doc__.split("Exit codes:", 1)[1].strip("\n")
MAX_INLINE_ARTIFACT = 4 * 1024 * 1024  # base64 grows it by 4/3; the body limit is 6 MiB
TERMINAL = ("concluded", "rolled_back")


class Context:
    """What every command gets: output options and a lazily built client."""

    def __init__(self, url: str | None, token: str | None, as_json: bool, quiet: bool) -> None:
        self.url = url
        self.token = token
        self.as_json = as_json
        self.quiet = quiet
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        """The API client (flags over ``SYNAPSE_URL``/``SYNAPSE_TOKEN`` over the config file)."""
        if self._client is None:
            try:
                settings = config_file.load_settings(url=self.url)
            except ValueError as exc:  # a broken config file: exit 2 naming it, no traceback
                raise click.UsageError(str(exc)) from None
            self._client = Client(settings.url, self.token or settings.token)
        return self._client

    def progress(self) -> ProgressBar:
        """A progress display on stderr (silent with ``--quiet``)."""
        return ProgressBar(enabled=not self.quiet)

    def emit(self, data: Any, human: Callable[[Any], str]) -> None:
        """Prints ``data`` as JSON (``--json``) or as ``human(data)``."""
        click.echo(dumps(data) if self.as_json else human(data))


pass_ctx = click.make_pass_decorator(Context)


class Cli(click.Group):
    """Maps client errors to the documented exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SynapseClientError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:  # a local file or folder (-o into a missing folder, a full disk)
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("\ninterrupted; run the same command again to resume", err=True)
            ctx.exit(130)


@click.group(cls=Cli, epilog="\b\nExit codes:\n" + EXIT_CODES)
@click.option("--url", envvar="SYNAPSE_URL", help="API base URL (else the config file).")
@click.option("--token", envvar="SYNAPSE_TOKEN", help="API token (else the config file).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.version_option(package_name="synapse-client", message="%(prog)s %(version)s")
@click.pass_context
def main(ctx: click.Context, url: str | None, token: str | None, as_json: bool, quiet: bool):
    """SynapseNet from the terminal: data versions, experiments, models, explanations."""
    ctx.obj = Context(url, token, as_json, quiet)


# ---------------------------------------------------------------------- login


@main.command()
@click.option("--url", "login_url", required=True, help="API base URL.")
@click.option("--token", "login_token", required=True, help="API token (snk_...).")
@pass_ctx
def login(obj: Context, login_url: str, login_token: str) -> None:
    """Checks a token and saves it in the config file (permissions 0600)."""
    who = Client(login_url, login_token).whoami()
    path = config_file.save(login_url, login_token)
    obj.emit(
        {**who, "config": str(path), "url": login_url.rstrip("/")},
        lambda d: (
            f"logged in to {d['url']} as {d['principal']} ({', '.join(d['roles'])}); "
            f"saved in {d['config']}"
        ),
    )


@main.command()
@pass_ctx
def whoami(obj: Context) -> None:
    """The token's principal, roles and groups."""
    obj.emit(obj.client.whoami(), lambda d: pairs(d, ["principal", "roles", "groups"]))


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Prints the shell completion script: eval "$(synapse completion bash)"."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None  # the three choices are click's built-in shells
    click.echo(cls(main, {}, "synapse", "_SYNAPSE_COMPLETE").source())


# ---------------------------------------------------------------------- data


@main.group()
def data() -> None:
    """Dataset versions: push, pull, log, diff, tag, drift, profile."""


def _dataset_id(client: Client, ref: str) -> str:
    """A dataset id from an id or a unique name."""
    if ref.startswith("ds-"):
        return ref
    matches = [d for d in client.iter_datasets() if d["name"] == ref]
    if len(matches) != 1:
        raise click.UsageError(f"{len(matches)} datasets are named {ref!r}; give the dataset id")
    return matches[0]["dataset_id"]


@data.command("create")
@click.argument("name")
@click.option(
    "--format",
    "fmt",
    default="csv",
    show_default=True,
    type=click.Choice(["csv", "json", "parquet", "tfrecord", "numpy", "pickle"]),
)
@click.option("--group", "groups", multiple=True, help="Access group (repeatable).")
@click.option("--compatibility", default=None, help="Schema compatibility mode.")
@click.option("--description", default=None)
@pass_ctx
def data_create(obj: Context, name: str, fmt: str, groups: tuple[str, ...],
                compatibility: str | None, description: str | None) -> None:  # fmt: skip
    """Creates a dataset."""
    found = obj.client.create_dataset(
        name, format=fmt, access_groups=list(groups), compatibility=compatibility,
        description=description,
    )  # fmt: skip
    obj.emit(found, lambda d: f"created {d['dataset_id']} ({d['name']}, {d['format']})")


@data.command("ls")
@pass_ctx
def data_ls(obj: Context) -> None:
    """Datasets this token may read."""
    found = {"datasets": list(obj.client.iter_datasets())}  # every page
    obj.emit(found, lambda d: table(d["datasets"], ["dataset_id", "name", "format", "owner",
                                                    "access_groups"]))  # fmt: skip


def _version_line(version: dict[str, Any]) -> str:
    return (
        f"version {version['version_number']} ({version['version_id']}), "
        f"{human_bytes(version['size_bytes'])}, {version.get('row_count')} rows, "
        f"sha256 {version['sha256'][:16]}…"
    )


@data.command("push")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.argument("dataset")
@click.option("--multipart", is_flag=True, help="Stage as multipart, hashing while uploading.")
@click.option("--no-wait", is_flag=True, help="Return once uploaded (do not wait for the ingest).")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for the ingest.")
@pass_ctx
def data_push(obj: Context, path: str, dataset: str, multipart: bool, no_wait: bool,
              timeout: float) -> None:  # fmt: skip
    """Uploads PATH as a new version of DATASET (resumes an interrupted push)."""
    client = obj.client
    bar = obj.progress()
    try:
        found = client.push(path, _dataset_id(client, dataset), progress=bar,
                            mode="multipart" if multipart else "auto", wait=not no_wait,
                            timeout=timeout)  # fmt: skip
    finally:
        bar.close()

    def human(d: dict[str, Any]) -> str:
        head = f"{d['mode']} upload of {human_bytes(d['sent_bytes'])}"
        head += " (resumed)" if d["resumed"] else ""
        return head + (f": {_version_line(d['version'])}" if d.get("version") else "")

    obj.emit(found, human)


@data.command("pull")
@click.argument("dataset")
@click.argument("version")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Where to write it.")
@pass_ctx
def data_pull(obj: Context, dataset: str, version: str, output: str | None) -> None:
    """Downloads VERSION (a number, an id, or a tag) of DATASET and checks its sha256."""
    client = obj.client
    dataset_id = _dataset_id(client, dataset)
    target = output or f"{dataset_id}-v{version}"
    bar = obj.progress()
    try:
        found = client.pull(dataset_id, version, target, progress=bar)
    finally:
        bar.close()
    obj.emit(found, lambda d: f"wrote {d['path']} ({human_bytes(d['size_bytes'])}), "
                              f"sha256 {d['sha256']} verified")  # fmt: skip


@data.command("log")
@click.argument("dataset")
@click.option("--limit", default=20, show_default=True, help="Newest versions shown.")
@pass_ctx
def data_log(obj: Context, dataset: str, limit: int) -> None:
    """Versions of DATASET, newest first."""
    client = obj.client
    dataset_id = _dataset_id(client, dataset)
    total = client.list_versions(dataset_id, limit=1)["total"]
    page = client.list_versions(dataset_id, limit=min(max(limit, 1), 500),
                                offset=max(0, total - limit))  # fmt: skip
    versions = list(reversed(page["versions"]))
    rows = [{**v, "sha256": v["sha256"][:12], "size": human_bytes(v["size_bytes"]),
             "parents": len(v["parent_version_ids"])} for v in versions]  # fmt: skip
    obj.emit({"dataset_id": dataset_id, "total": total, "versions": versions},
             lambda d: table(rows, ["version_number", "version_id", "created_at", "size",
                                    "row_count", "sha256", "created_by"]))  # fmt: skip


@data.command("diff")
@click.argument("dataset")
@click.argument("a")
@click.argument("b")
@pass_ctx
def data_diff(obj: Context, dataset: str, a: str, b: str) -> None:
    """Schema, row-count and row differences between versions A and B."""
    client = obj.client
    found = client.compare(_dataset_id(client, dataset), a, b)

    def human(d: dict[str, Any]) -> str:
        keys = [k for k in d if not isinstance(d[k], dict | list)]
        lines = [pairs(d, keys)] if keys else []
        for key, value in d.items():
            if isinstance(value, dict | list) and value:
                lines.append(f"{key}: {json.dumps(value, default=str)[:2000]}")
        return "\n".join(lines)

    obj.emit(found, human)


@data.command("tag")
@click.argument("dataset")
@click.argument("version")
@click.argument("tag")
@pass_ctx
def data_tag(obj: Context, dataset: str, version: str, tag: str) -> None:
    """Points TAG at VERSION of DATASET (the tag's history keeps who moved it, when, from where)."""
    client = obj.client
    moved = client.move_tag(_dataset_id(client, dataset), tag, version)
    obj.emit(moved, lambda d: pairs(d, list(d)))


@data.command("drift")
@click.argument("dataset")
@click.argument("a")
@click.argument("b")
@pass_ctx
def data_drift(obj: Context, dataset: str, a: str, b: str) -> None:
    """Per-column drift from version A to B (PSI; KS or chi-square with p-values)."""
    client = obj.client
    found = client.drift(_dataset_id(client, dataset), a, b)

    def human(d: dict[str, Any]) -> str:
        lines = []
        for key, value in d.items():
            shown = json.dumps(value, default=str) if isinstance(value, dict | list) else value
            lines.append(f"{key}: {str(shown)[:2000]}")
        return "\n".join(lines)

    obj.emit(found, human)


@data.command("profile")
@click.argument("dataset")
@click.argument("version")
@pass_ctx
def data_profile(obj: Context, dataset: str, version: str) -> None:
    """The column profile of a version (counts, nulls, distinct, moments, quantiles, top)."""
    client = obj.client
    found = client.profile(_dataset_id(client, dataset), version)

    def human(p: dict[str, Any]) -> str:
        scope = f"{p['profiled_rows']} of {p['rows']} rows" + (" (sample)" if p["sampled"] else "")
        lines = [f"version {p['version_number']}: {scope}"]
        for c in p["columns"]:
            if c["kind"] == "numeric":
                detail = f"min {c['min']} max {c['max']} mean {c['mean']} std {c['std']}"
            else:
                detail = ", ".join(f"{t['value']!r}×{t['count']}" for t in c["top"][:5])
            lines.append(
                f"{c['name']}: {c['kind']}, {c['count']} values, {c['nulls']} empty, "
                f"{'?' if c['distinct'] is None else c['distinct']} distinct; {detail}"
            )
        if p.get("note"):
            lines.append(p["note"])
        return "\n".join(lines)

    obj.emit(found, human)


# ---------------------------------------------------------------------- experiments


@main.group()
def exp() -> None:
    """Experiments: create, start, status --watch, analyse, conclude."""


def _load_spec(path: str) -> dict[str, Any]:
    import yaml

    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise click.UsageError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(spec, dict):
        raise click.UsageError(f"{path}: expected a mapping with name and variants")
    variants = spec.get("variants") or []
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise click.UsageError(f"{path}: variants must be a list of mappings")
    for variant in variants:
        if "traffic_weight" in variant:  # YAML reads 0.5 as a float; the API wants "0.5"
            variant["traffic_weight"] = str(variant["traffic_weight"])
    for key in ("ramp",):
        if isinstance(spec.get(key), dict) and "steps" in spec[key]:
            spec[key]["steps"] = [str(step) for step in spec[key]["steps"]]
    if isinstance(spec.get("bandit"), dict) and "floor" in spec["bandit"]:
        spec["bandit"]["floor"] = str(spec["bandit"]["floor"])
    return spec


def _experiment_line(d: dict[str, Any]) -> str:
    weights = ", ".join(f"{v['variant_id']}={v['effective_weight']}" for v in d["variants"])
    return f"{d['experiment_id']} {d['name']!r}: {d['status']} ({weights})"


@exp.command("create")
@click.option(
    "-f",
    "--file",
    "path",
    required=True,
    help="Experiment YAML (or - for stdin).",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
)
@click.option("--start", is_flag=True, help="Start it right away.")
@pass_ctx
def exp_create(obj: Context, path: str, start: bool) -> None:
    """Creates an experiment from a YAML file (its rollback_policy too, if given)."""
    spec = _load_spec(path)
    policy = spec.pop("rollback_policy", None)
    client = obj.client
    found = client.create_experiment(**spec)
    if policy:
        client.set_rollback_policy(found["experiment_id"], **policy)
    if start:
        found = client.start_experiment(found["experiment_id"])
    obj.emit(found, _experiment_line)


@exp.command("ls")
@click.option("--status", default=None, help="Only this status.")
@pass_ctx
def exp_ls(obj: Context, status: str | None) -> None:
    """Experiments, newest first."""
    found = obj.client.list_experiments(status=status)
    rows = [{**e, "variants": len(e["variants"])} for e in found["experiments"]]
    obj.emit(
        found,
        lambda d: table(
            rows,
            ["experiment_id", "name", "status", "allocation_strategy", "variants", "created_at"],
        ),
    )


def _transition(name: str, call: str, help_text: str) -> None:
    @exp.command(name, help=help_text)
    @click.argument("experiment_id")
    @pass_ctx
    def command(obj: Context, experiment_id: str) -> None:
        obj.emit(getattr(obj.client, call)(experiment_id), _experiment_line)


_transition("start", "start_experiment", "draft → running.")
_transition("pause", "pause_experiment", "running → paused (everyone to the control).")
_transition("resume", "resume_experiment", "paused → running.")


@exp.command("rollback")
@click.argument("experiment_id")
@click.option("--reason", required=True)
@pass_ctx
def exp_rollback(obj: Context, experiment_id: str, reason: str) -> None:
    """Rolls back now (everyone to the control)."""
    obj.emit(obj.client.rollback_experiment(experiment_id, reason=reason), _experiment_line)


def _status(client: Client, experiment_id: str) -> dict[str, Any]:
    return {
        "experiment": client.get_experiment(experiment_id),
        "metrics": client.metrics(experiment_id)["variants"],
    }


def _status_text(d: dict[str, Any]) -> str:
    experiment = d["experiment"]
    rows = []
    for variant in experiment["variants"]:
        found = d["metrics"].get(variant["variant_id"], {})
        rows.append({"variant": variant["variant_id"] + (" (control)" if variant["is_control"]
                                                          else ""),
                     "weight": variant["effective_weight"],
                     "requests": found.get("request_count", 0),
                     "error_rate": found.get("error_rate"),
                     "conversion": found.get("conversion_rate"),
                     "p95_ms": found.get("latency_p95_ms")})  # fmt: skip
    text = (
        _experiment_line(experiment)
        + "\n"
        + table(rows, ["variant", "weight", "requests", "error_rate", "conversion", "p95_ms"])
    )
    if experiment.get("rollback_reason"):
        text += f"\nrolled back: {experiment['rollback_reason']}"
    return text


def _seconds(param: click.Parameter, value: float) -> float:
    if not value >= 0.1:  # also false for NaN, which time.sleep refuses
        raise click.BadParameter(f"{value} is not a number of seconds of at least 0.1", param=param)
    return value


@exp.command("status")
@click.argument("experiment_id")
@click.option("--watch", is_flag=True, help="Refresh until it concludes or is rolled back.")
@click.option("--interval", default=2.0, show_default=True, callback=lambda c, p, v: _seconds(p, v),
              help="Seconds between refreshes (at least 0.1).")  # fmt: skip
@click.option("--limit", "watch_limit", default=0.0, help="Stop watching after this many seconds.")
@pass_ctx
def exp_status(obj: Context, experiment_id: str, watch: bool, interval: float,
               watch_limit: float) -> None:  # fmt: skip
    """State, weights and live metrics per variant (--watch: with progress to the sample size)."""
    client = obj.client
    found = _status(client, experiment_id)
    if not watch:
        obj.emit(found, _status_text)
        return
    bar = obj.progress()
    deadline = time.monotonic() + watch_limit if watch_limit > 0 else None
    try:
        while True:
            target = found["experiment"]["minimum_sample_size"] * len(found["metrics"] or [1])
            done = sum(m["request_count"] for m in found["metrics"].values())
            bar("samples", done, max(target, 1))
            if not obj.as_json:
                click.echo("\n" + _status_text(found))
            if found["experiment"]["status"] in TERMINAL:
                break
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(interval)
            found = _status(client, experiment_id)
    finally:
        bar.close()
    if obj.as_json:
        click.echo(dumps(found))


@exp.command("analyse")
@click.argument("experiment_id")
@pass_ctx
def exp_analyse(obj: Context, experiment_id: str) -> None:
    """Statistics per treatment, guardrails, SRM and the recommendation."""
    found = obj.client.analysis(experiment_id)

    def human(d: dict[str, Any]) -> str:
        rows = [{**t, "ci": t["confidence_interval"]} for t in d["treatments"]]
        text = table(
            rows,
            [
                "variant_id",
                "metric_name",
                "control_value",
                "treatment_value",
                "p_value",
                "adjusted_p_value",
                "ci",
                "recommended_action",
            ],
        )
        text += f"\nrecommendation: {d['recommendation']}"
        if d.get("recommended_winner"):
            text += f" (winner: {d['recommended_winner']})"
        return text + "".join(f"\nwarning: {w}" for w in d.get("warnings", []))

    obj.emit(found, human)


exp.add_command(exp_analyse, "analyze")


@exp.command("conclude")
@click.argument("experiment_id")
@click.option("--winner", default=None, help="Winning variant (default: the analysis picks).")
@pass_ctx
def exp_conclude(obj: Context, experiment_id: str, winner: str | None) -> None:
    """Concludes: the winner gets all traffic and its model version goes to production."""
    found = obj.client.conclude_experiment(experiment_id, winning_variant_id=winner)
    obj.emit(found, lambda d: _experiment_line(d) + f"; winner {d['winning_variant_id']}")


# ---------------------------------------------------------------------- models


@main.group()
def model() -> None:
    """Model registry: register and promote versions."""


@model.command("ls")
@pass_ctx
def model_ls(obj: Context) -> None:
    """Registered models."""
    found = obj.client.list_models()
    obj.emit(found, lambda d: table(d["models"], ["model_id", "name", "latest_version",
                                                  "production_version", "owner"]))  # fmt: skip


@model.command("register")
@click.argument("model")
@click.argument("artifact", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--task",
    required=True,
    type=click.Choice(
        ["classification", "regression", "text_classification", "image_classification"]
    ),
)
@click.option("--feature", "features", multiple=True, help="Feature name, in order (repeatable).")
@click.option("--class-name", "classes", multiple=True, help="Class name (repeatable).")
@click.option("--create", is_flag=True, help="MODEL is a name: create the model first.")
@click.option("--description", default=None)
@pass_ctx
def model_register(
    obj: Context,
    model: str,
    artifact: str,
    task: str,
    features: tuple[str, ...],
    classes: tuple[str, ...],
    create: bool,
    description: str | None,
) -> None:
    """Registers a skops ARTIFACT as a new version of MODEL (uploaded when large)."""
    client = obj.client
    model_id = client.create_model(model)["model_id"] if create else model
    raw = Path(artifact).read_bytes()
    source: dict[str, Any]
    if len(raw) > MAX_INLINE_ARTIFACT:
        upload = client.create_model_upload(model_id)
        import requests

        answer = requests.put(upload["url"], data=raw, timeout=600)
        if answer.status_code >= 300:
            raise SynapseClientError(f"artifact upload refused: {answer.status_code}")
        source = {"artifact_upload_key": upload["upload_key"]}
    else:
        source = {"artifact_base64": base64.b64encode(raw).decode()}
    found = client.register_version(model_id, task, format="skops", feature_names=list(features),
                                    class_names=list(classes), description=description,
                                    **source)  # fmt: skip
    obj.emit(
        found,
        lambda d: (
            f"registered {d['model_id']} version {d['version']} "
            f"(sha256 {d['artifact_sha256'][:16]}…, stage {d['stage']})"
        ),
    )


@model.command("promote")
@click.argument("model_id")
@click.argument("version", type=int)
@click.option("--stage", default="production", show_default=True,
              type=click.Choice(["staging", "production", "archived"]))  # fmt: skip
@pass_ctx
def model_promote(obj: Context, model_id: str, version: int, stage: str) -> None:
    """Moves VERSION of MODEL_ID to a stage (production archives the previous one)."""
    found = obj.client.set_stage(model_id, version, stage)
    obj.emit(found, lambda d: f"{d['model_id']} version {d['version']} is now {d['stage']}")


# ---------------------------------------------------------------------- explanations


def _read_inputs(value: str | None, path: str | None) -> list[Any]:
    if value is not None:
        found = _json(value, "--input")
        return found if isinstance(found, list) else [found]
    if path is None:
        raise click.UsageError("give --input JSON or --input-file (JSON or JSON lines)")
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    stripped = text.strip()
    if stripped.startswith("["):
        return _json(stripped, path)
    return [
        _json(line, f"{path} line {number}")
        for number, line in enumerate(stripped.splitlines(), start=1)
        if line.strip()
    ]


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.UsageError(f"{where} is not valid JSON: {exc}") from None


def _waterfall(d: dict[str, Any]) -> str:
    rows = sorted(d["feature_contributions"], key=lambda c: -abs(c["contribution"]))[:15]
    widest = max([abs(r["contribution"]) for r in rows] + [1e-12])
    lines = [f"{d['algorithm']} ({d['output_space']}): base {d['base_prediction']:.4g} → "
             f"prediction {d['actual_prediction']:.4g}"]  # fmt: skip
    for row in rows:
        length = int(round(abs(row["contribution"]) / widest * 30))
        sign = "+" if row["contribution"] >= 0 else "-"
        lines.append(f"  {row['feature_name'][:24]:<24} {row['contribution']:+.4g} "
                     f"{sign * max(length, 1)}")  # fmt: skip
    return "\n".join(lines)


@main.command()
@click.argument("model_id")
@click.option("--input", "input_json", default=None, help="One input as JSON.")
@click.option(
    "--input-file",
    default=None,
    help="Inputs as JSON or JSON lines (- for stdin).",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
)
@click.option("--method", default="shap", show_default=True, type=click.Choice(["shap", "lime"]))
@click.option("--global", "global_", is_flag=True, help="Global importance over the inputs.")
@click.option("--version", "model_version", type=int, default=None)
@click.option("--seed", type=int, default=None)
@pass_ctx
def explain(
    obj: Context,
    model_id: str,
    input_json: str | None,
    input_file: str | None,
    method: str,
    global_: bool,
    model_version: int | None,
    seed: int | None,
) -> None:
    """Explains one input (a waterfall), several, or global importance."""
    client = obj.client
    inputs = _read_inputs(input_json, input_file)
    options = {"seed": seed} if seed is not None else {}
    if global_:
        found = client.explain_global(model_id, inputs=inputs, model_version=model_version,
                                      explanation_type=method, **options)  # fmt: skip
        if "job_id" in found:
            found = client.wait_job(found["job_id"])
        ranked = sorted(found["feature_importances"].items(), key=lambda i: -i[1])
        obj.emit(found, lambda d: table([{"feature": k, "importance": v} for k, v in ranked],
                                        ["feature", "importance"]))  # fmt: skip
        return
    if len(inputs) == 1:
        found = client.explain(model_id, inputs[0], explanation_type=method,
                               model_version=model_version, **options)  # fmt: skip
        obj.emit(found, _waterfall)
        return
    found = client.explain_batch(model_id, inputs, explanation_type=method,
                                 model_version=model_version, **options)  # fmt: skip
    if "job_id" in found:
        found = client.wait_job(found["job_id"])
    obj.emit(found, lambda d: "\n\n".join(_waterfall(e) for e in d["explanations"]))


def run() -> None:
    """Console-script entry point."""
    main(prog_name="synapse", auto_envvar_prefix=None)


if __name__ == "__main__":  # pragma: no cover - python -m synapse_client.cli
    run()
