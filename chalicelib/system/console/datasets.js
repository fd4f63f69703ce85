// Datasets: versions, tags, schema, the lineage graph, and the difference (or drift) between
// a version and the one before it.
import { get, has, q } from "./api.js";
import { lineageGraph } from "./charts.js";
import { card, el, fmt, show, table, when } from "./ui.js";

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

async function changesCard(dataset, version) {
  if (version.version_number <= 1) return card("Changes", el("p", { class: "muted" }, "The first version."));
  const previous = version.version_number - 1;
  const compared = await get(`/datasets/${q(dataset.dataset_id)}/compare?a=${previous}&b=${version.version_number}`);
  const rows = Object.entries(compared.row_count).map(([k, v]) => [k, v]);
  const parts = [
    el("p", {}, `v${previous} → v${version.version_number}: `, compared.same_content ? "same content" : "content changed"),
    table(rows, [["Rows", ([k]) => k], ["Count", ([, v]) => fmt(v)]]),
    el("pre", { class: "muted" }, JSON.stringify(compared.schema, null, 1).slice(0, 1500)),
  ];
  if (await has("GET", "/datasets/{dataset_id}/drift")) {
    const drift = await get(`/datasets/${q(dataset.dataset_id)}/drift?a=${previous}&b=${version.version_number}`);
    parts.push(el("h2", {}, "Drift"), el("pre", {}, JSON.stringify(drift, null, 1).slice(0, 3000)));
  } else {
    parts.push(el("p", { class: "muted drift-missing" }, "Drift: this server has no drift route yet (GET /datasets/{id}/drift)."));
  }
  return card("Changes", ...parts);
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
  const [lineage, changes] = await Promise.all([lineageCard(version), changesCard(dataset, version)]);
  show(...header, versionsCard,
    el("div", { class: "grid" }, card(`Schema of v${version.version_number}`, schemaTable(version)), changes),
    lineage);
}
