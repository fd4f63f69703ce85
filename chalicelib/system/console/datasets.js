// Datasets: named tags, versions, schema, the lineage graph, the difference between a version
// and the one before it, and per-column drift between any two versions.
import { get, has, q } from "./api.js";
import { lineageGraph } from "./charts.js";
import { card, el, errorBox, fmt, show, table, when } from "./ui.js";

export async function datasetList() {
  const { datasets } = await get("/datasets");
  show(
    el("h1", {}, "Datasets"),
    datasets.length === 0 ? el("p", { class: "muted" }, "No datasets yet.") : table(datasets, [
      ["Name", (d) => d.name], ["Format", (d) => d.format], ["Owner", (d) => d.owner],
      ["Groups", (d) => d.access_groups.join(", ") || "–"], ["Compatibility", (d) => d.compatibility],
      ["Created", (d) => when(d.created_at)], ["Id", (d) => el("code", {}, d.dataset_id)],
    ], (d) => { window.location.hash = `#/datasets/${d.dataset_id}`; }),
  );
}

function size(bytes) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

function schemaTable(version) {
  const schema = version.schema;
  if (!schema) return el("p", { class: "muted" }, "No schema (an opaque format).");
  const nullable = new Set(schema.nullable);
  return table(Object.entries(schema.columns), [
    ["Column", ([name]) => name], ["Type", ([, type]) => type],
    ["Nullable", ([name]) => (nullable.has(name) ? "yes" : "no")],
    ["Key", ([name]) => (schema.primary_key.includes(name) ? "primary" : "")],
  ]);
}

async function lineageCard(version) {
  const found = await get(`/lineage/${q(version.version_id)}?direction=both&max_depth=5`);
  const nodes = new Map();
  const edges = new Map();
  for (const view of [found.upstream, found.downstream]) {
    if (!view) continue;
    view.nodes.forEach((n) => nodes.set(n.version_id, n));
    view.edges.forEach((e) => edges.set(`${e.parent_id}>${e.child_id}`, e));
  }
  const graph = lineageGraph([...nodes.values()], [...edges.values()], version.version_id,
    (n) => { window.location.hash = `#/datasets/${n.dataset_id}/${n.version_number}`; });
  return card("Lineage", graph);
}

// PSI bands as most monitoring tools draw them: < 0.1 stable, 0.1–0.25 moderate, ≥ 0.25 shifted.
function psiBand(psi) {
  if (psi === null || psi === undefined) return el("span", { class: "muted" }, "–");
  if (psi >= 0.25) return el("span", { class: "bad drift-shifted" }, "shifted");
  if (psi >= 0.1) return el("span", { class: "warn drift-moderate" }, "moderate");
  return el("span", { class: "good" }, "stable");
}

function driftTable(drift) {
  const schema = drift.schema;
  const notes = [
    `v${drift.a.version_number} → v${drift.b.version_number}: ${fmt(drift.rows.a)} → ${fmt(drift.rows.b)} rows`
      + ` (sampled ${fmt(drift.sampled_rows.a)} / ${fmt(drift.sampled_rows.b)})`,
  ];
  if (schema.added.length) notes.push(`added: ${schema.added.join(", ")}`);
  if (schema.removed.length) notes.push(`removed: ${schema.removed.join(", ")}`);
  if (schema.incompatible.length) notes.push(`incompatible: ${schema.incompatible.join("; ")}`);
  return el("div", { class: "drift" },
    el("p", { class: "muted" }, notes.join(" · ")),
    drift.columns.length === 0 ? el("p", { class: "muted" }, "No column in both versions.") : table(drift.columns, [
      ["Column", (c) => c.column], ["Kind", (c) => c.kind], ["PSI", (c) => fmt(c.psi, 3)],
      ["Drift", (c) => psiBand(c.psi)], ["Test", (c) => (c.test === "ks" ? "KS" : "χ²")],
      ["Statistic", (c) => fmt(c.statistic, 3)], ["p-value", (c) => fmt(c.p_value, 3)],
      ["Nulls a → b", (c) => `${fmt(c.nulls.a, 3)} → ${fmt(c.nulls.b, 3)}`],
    ]));
}

function versionPicker(versions, chosen, id) {
  return el("select", { id }, versions.map((v) => el("option", {
    value: v.version_number, selected: v.version_number === chosen,
  }, `v${v.version_number}`)));
}

// Drift between any two versions: two pickers (defaults: the version before and this one).
async function driftCard(dataset, versions, version) {
  if (!(await has("GET", "/datasets/{dataset_id}/drift"))) {
    return card("Drift", el("p", { class: "muted drift-missing" },
      "This server has no drift route (GET /datasets/{id}/drift)."));
  }
  if (versions.length < 2) return card("Drift", el("p", { class: "muted" }, "One version: nothing to compare."));
  const numbers = versions.map((v) => v.version_number);
  const older = numbers.filter((n) => n < version.version_number);
  const a = versionPicker(versions, older.length ? Math.max(...older) : Math.min(...numbers), "drift-a");
  const b = versionPicker(versions, version.version_number, "drift-b");
  const result = el("div", { id: "drift-result" });
  const run = async () => {
    result.replaceChildren(el("p", { class: "muted" }, "Comparing…"));
    try {
      const path = `/datasets/${q(dataset.dataset_id)}/drift?a=${q(a.value)}&b=${q(b.value)}`;
      result.replaceChildren(driftTable(await get(path)));
    } catch (error) {
      result.replaceChildren(errorBox(error));
    }
  };
  a.onchange = run;
  b.onchange = run;
  await run();
  return card("Drift", el("div", { class: "pickers" }, el("label", {}, "from ", a), el("label", {}, "to ", b)), result);
}

async function changesCard(dataset, version) {
  if (version.version_number <= 1) return card("Changes", el("p", { class: "muted" }, "The first version."));
  const previous = version.version_number - 1;
  const compared = await get(`/datasets/${q(dataset.dataset_id)}/compare?a=${previous}&b=${version.version_number}`);
  const rows = Object.entries(compared.row_count).map(([k, v]) => [k, v]);
  return card("Changes",
    el("p", {}, `v${previous} → v${version.version_number}: `, compared.same_content ? "same content" : "content changed"),
    table(rows, [["Rows", ([k]) => k], ["Count", ([, v]) => fmt(v)]]),
    el("pre", { class: "muted" }, JSON.stringify(compared.schema, null, 1).slice(0, 1500)));
}

// Named tags (production, candidate, ...): where each points and who moved it last.
async function tagsCard(dataset) {
  if (!(await has("GET", "/datasets/{dataset_id}/tags"))) return null;
  const { tags } = await get(`/datasets/${q(dataset.dataset_id)}/tags`);
  if (tags.length === 0) return card("Tags", el("p", { class: "muted" }, "No tags yet (PUT /datasets/{id}/tags/{tag})."));
  return card("Tags", table(tags, [
    ["Tag", (t) => el("code", {}, t.tag)], ["Version", (t) => `v${t.version_number}`],
    ["Moved by", (t) => t.moved_by], ["Moved", (t) => when(t.moved_at)],
  ], (t) => { window.location.hash = `#/datasets/${dataset.dataset_id}/${t.version_number}`; }));
}

export async function datasetDetail(datasetId, selected) {
  const dataset = await get(`/datasets/${q(datasetId)}`);
  const first = await get(`/datasets/${q(datasetId)}/versions?limit=1`);
  const offset = Math.max(0, first.total - 200);
  const { versions } = await get(`/datasets/${q(datasetId)}/versions?limit=200&offset=${offset}`);
  versions.reverse();
  const version = versions.find((v) => String(v.version_number) === String(selected)) || versions[0];
  const header = [
    el("h1", {}, dataset.name),
    el("p", { class: "muted" }, `${dataset.dataset_id} · ${dataset.format} · ${dataset.compatibility} compatibility · `
      + `${first.total} versions · groups ${dataset.access_groups.join(", ") || "–"}`),
  ];
  if (!version) {
    show(...header, el("p", { class: "muted" }, "No versions yet."));
    return;
  }
  const versionsCard = card("Versions", table(versions, [
    ["Version", (v) => `v${v.version_number}`], ["Created", (v) => when(v.created_at)],
    ["Size", (v) => size(v.size_bytes)], ["Rows", (v) => fmt(v.row_count)],
    ["Tags", (v) => Object.entries(v.tags).map(([k, t]) => `${k}=${t}`).join(", ") || "–"],
    ["sha256", (v) => el("code", {}, v.sha256.slice(0, 12))], ["By", (v) => v.created_by],
  ], (v) => { window.location.hash = `#/datasets/${datasetId}/${v.version_number}`; },
  (v) => v.version_id === version.version_id));
  const [lineage, changes, drift, tags] = await Promise.all([lineageCard(version),
    changesCard(dataset, version), driftCard(dataset, versions, version), tagsCard(dataset)]);
  show(...header, tags, versionsCard,
    el("div", { class: "grid" }, card(`Schema of v${version.version_number}`, schemaTable(version)), changes),
    drift, lineage);
}
