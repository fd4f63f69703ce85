// Models: versions and stages, an explanation as a waterfall, and global importance.
import { get, post, q } from "./api.js";
import { bars, waterfall } from "./charts.js";
import { badge, card, el, errorBox, fmt, show, table, when } from "./ui.js";

export async function modelList() {
  const { models } = await get("/models");
  show(
    el("h1", {}, "Models"),
    models.length === 0 ? el("p", { class: "muted" }, "No models yet.") : table(models, [
      ["Name", (m) => m.name], ["Latest", (m) => `v${m.latest_version}`],
      ["Production", (m) => (m.production_version ? `v${m.production_version}` : "–")],
      ["Owner", (m) => m.owner], ["Updated", (m) => when(m.updated_at)],
      ["Id", (m) => el("code", {}, m.model_id)],
    ], (m) => { window.location.hash = `#/models/${m.model_id}`; }),
  );
}

function sampleRow(features, shift = 0) {
  return Object.fromEntries(features.map((f, i) => [f, Number((((i % 3) - 1) * 0.5 + shift).toFixed(2))]));
}

function explainCard(model, version) {
  const input = el("textarea", { id: "explain-input" },
    JSON.stringify(sampleRow(version.feature_names), null, 1));
  const method = el("select", { id: "explain-method" }, el("option", {}, "shap"), el("option", {}, "lime"));
  const out = el("div", { id: "explain-output" });
  const run = async () => {
    out.replaceChildren(el("p", { class: "muted" }, "Explaining…"));
    try {
      const found = await post("/explanations", { model_id: model.model_id, model_version: version.version,
        explanation_type: method.value, input_data: JSON.parse(input.value) });
      out.replaceChildren(waterfall(found), el("p", { class: "muted" },
        `${found.algorithm}${found.cached ? " (cached)" : ""}, additivity error ${fmt(found.additivity_error)}`));
    } catch (error) { out.replaceChildren(errorBox(error)); }
  };
  return card(`Explain one prediction of v${version.version}`, el("label", {}, "Input (JSON)"), input,
    el("label", {}, "Method"), method, el("button", { id: "explain-run", type: "button", onclick: run }, "Explain"), out);
}

function globalCard(model, version) {
  const rows = [0, 1, 2, 3, 4].map((i) => JSON.stringify(sampleRow(version.feature_names, (i - 2) / 2)));
  const input = el("textarea", { id: "global-input" }, rows.join("\n"));
  const out = el("div", { id: "global-output" });
  const run = async () => {
    out.replaceChildren(el("p", { class: "muted" }, "Computing…"));
    try {
      const inputs = input.value.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
      const found = await post("/explanations/global", { model_id: model.model_id, model_version: version.version, inputs });
      out.replaceChildren(bars(found.feature_importances), el("p", { class: "muted" },
        `${found.n_explanations} explanations, ${found.aggregation_method} |contribution|`));
    } catch (error) { out.replaceChildren(errorBox(error)); }
  };
  return card(`Global importance of v${version.version}`, el("label", {}, "Inputs (JSON lines)"), input,
    el("button", { id: "global-run", type: "button", onclick: run }, "Compute"), out);
}

export async function modelDetail(modelId) {
  const model = await get(`/models/${q(modelId)}`);
  const { versions } = await get(`/models/${q(modelId)}/versions`);
  const chosen = versions.find((v) => v.version === model.production_version) || versions[versions.length - 1];
  const header = [el("h1", {}, model.name), el("p", { class: "muted" }, `${model.model_id} · owner ${model.owner}`)];
  const versionTable = card("Versions and stages", table(versions, [
    ["Version", (v) => `v${v.version}`], ["Stage", (v) => badge(v.stage)], ["Task", (v) => v.task],
    ["Features", (v) => v.feature_names.join(", ")], ["Classes", (v) => v.class_names.join(", ") || "–"],
    ["Created", (v) => when(v.created_at)], ["sha256", (v) => el("code", {}, v.artifact_sha256.slice(0, 12))],
  ]));
  if (!chosen) {
    show(...header, versionTable);
    return;
  }
  show(...header, versionTable, el("div", { class: "grid" }, explainCard(model, chosen), globalCard(model, chosen)));
}
