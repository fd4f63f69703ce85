// Experiments: the list with status, and one experiment's live metrics, confidence intervals and
// allocation over time, guardrails, and rollback decisions with their reasons.
import { get, has, q } from "./api.js";
import { allocationChart, intervalChart } from "./charts.js";
import { badge, card, el, fmt, show, table, when } from "./ui.js";

const REFRESH_MS = 5000;
const KEPT_SAMPLES = 240;

export async function experimentList() {
  const { experiments } = await get("/experiments");
  show(
    el("h1", {}, "Experiments"),
    experiments.length === 0 ? el("p", { class: "muted" }, "No experiments yet.") : table(
      experiments,
      [
        ["Name", (e) => e.name],
        ["Status", (e) => badge(e.status)],
        ["Strategy", (e) => e.allocation_strategy],
        ["Weights", (e) => e.variants.map((v) => `${v.variant_id} ${v.effective_weight}`).join(" · ")],
        ["Created", (e) => when(e.created_at)],
        ["Id", (e) => el("code", {}, e.experiment_id)],
      ],
      (e) => { window.location.hash = `#/experiments/${e.experiment_id}`; },
    ),
  );
}

// What this tab has seen of an experiment (the API answers the current state only).
function history(experimentId) {
  const key = `synapse-history-${experimentId}`;
  const samples = JSON.parse(window.sessionStorage.getItem(key) || "[]");
  return {
    samples,
    add(sample) {
      samples.push(sample);
      window.sessionStorage.setItem(key, JSON.stringify(samples.slice(-KEPT_SAMPLES)));
    },
  };
}

function variantsTable(experiment, metrics) {
  return table(experiment.variants, [
    ["Variant", (v) => v.variant_id + (v.is_control ? " (control)" : "")],
    ["Model version", (v) => `${v.model_id} v${v.model_version}`],
    ["Weight", (v) => v.traffic_weight],
    ["Effective", (v) => v.effective_weight],
    ["Requests", (v) => fmt(metrics[v.variant_id]?.request_count ?? 0)],
    ["Success rate", (v) => fmt(metrics[v.variant_id]?.success_rate)],
    ["Error rate", (v) => fmt(metrics[v.variant_id]?.error_rate)],
    ["Conversion", (v) => fmt(metrics[v.variant_id]?.conversion_rate)],
    ["p50 / p95 ms", (v) => `${fmt(metrics[v.variant_id]?.latency_p50_ms, 3)} / `
      + `${fmt(metrics[v.variant_id]?.latency_p95_ms, 3)}`],
  ]);
}

function decisions(experiment, analysis, policy) {
  const parts = [];
  if (experiment.rollback_reason) {
    parts.push(el("p", { class: "reason rollback-reason" }, `Rolled back: ${experiment.rollback_reason}`));
    const details = experiment.rollback_details || {};
    if (Object.keys(details).length) {
      parts.push(table(Object.entries(details), [["Detail", ([k]) => k], ["Value", ([, v]) => fmt(v)]]));
    }
  }
  parts.push(el("p", {}, "Recommendation: ", el("strong", { class: "recommendation" },
    analysis.recommendation), analysis.recommended_winner ? ` (winner ${analysis.recommended_winner})` : ""));
  const guardrails = analysis.treatments.flatMap((t) => t.guardrails.map((g) => ({ ...g, variant: t.variant_id })));
  if (guardrails.length) {
    parts.push(table(guardrails, [
      ["Variant", (g) => g.variant], ["Guardrail", (g) => g.metric_name],
      ["Control", (g) => fmt(g.control_value)], ["Treatment", (g) => fmt(g.treatment_value)],
      ["Change", (g) => fmt(g.relative_change)],
      ["Verdict", (g) => el("span", { class: g.degraded ? "bad" : "good" }, g.degraded ? "degraded" : (g.has_data ? "healthy" : "no data"))],
    ]));
  }
  const srm = analysis.sample_ratio;
  if (srm.checked) {
    parts.push(el("p", { class: srm.mismatch ? "bad" : "muted" },
      `Sample ratio: p = ${fmt(srm.p_value)}${srm.mismatch ? " — mismatch" : ""}`));
  }
  analysis.warnings.forEach((w) => parts.push(el("p", { class: "muted" }, `⚠ ${w}`)));
  const caps = [
    policy.error_rate_threshold == null ? null : `error rate cap ${policy.error_rate_threshold}`,
    policy.latency_threshold_ms == null ? null : `${policy.latency_percentile} cap ${policy.latency_threshold_ms} ms`,
  ].filter(Boolean);
  parts.push(el("p", { class: "muted" }, `Automatic rollback ${policy.enabled ? "on" : "off"}: `
    + `each check tests the canary against the control (error rate over +${policy.error_rate_tolerance * 100}%, `
    + `${policy.latency_percentile} latency over +${policy.latency_degradation_threshold * 100}%, `
    + `always-valid at α ${policy.alpha}${caps.length ? `; ${caps.join(", ")}` : ""}) after `
    + `${policy.min_requests_before_rollback} requests per arm; ${policy.failure_limit} failed check(s) in a row roll back.`));
  return parts;
}

function allocationNote(experiment) {
  if (experiment.ramp) {
    const r = experiment.ramp;
    return `Ramp step ${r.current_step + 1} of ${r.steps.length} (${r.steps.join(" → ")}), `
      + `last moved ${when(r.last_ramp_at)}`;
  }
  if (experiment.bandit) return `Bandit: reweighted ${when(experiment.bandit.weights_updated_at)}`;
  return "Fixed percentages";
}

// The weights in force phase by phase, as the server recorded them (ramp steps, bandit
// reweights, pauses): one bar per phase in the chart, and the table of phases.
function allocationHistory(experiment) {
  const phases = experiment.allocation_history || [];
  const samples = phases.map((p) => ({ weights: Object.fromEntries(
    Object.entries(p.weights).map(([k, w]) => [k, Number(w)])) }));
  return [allocationChart(samples), table(phases.slice(-12), [
    ["Phase", (p) => p.phase], ["From", (p) => when(p.started_at)], ["Reason", (p) => p.reason],
    ["Weights", (p) => Object.entries(p.weights).map(([k, w]) => `${k} ${w}`).join(" · ")],
  ])];
}

// The monitor's latest canary check (pass / fail / inconclusive) and the run of failures.
function checkCard(checks) {
  if (!checks) return null;
  const latest = checks.latest;
  if (!latest) return card("Latest canary check", el("p", { class: "muted" }, "The monitor has not checked this experiment yet."));
  const css = { pass: "good", fail: "bad", inconclusive: "muted" }[latest.outcome];
  return card("Latest canary check",
    el("p", {}, el("strong", { class: `check-outcome ${css}` }, latest.outcome),
      ` at ${when(latest.checked_at)} · ${latest.consecutive_failures} of ${checks.failure_limit}`
      + ` failed check(s) in a row · ${latest.checks} check(s) so far`),
    el("p", { class: "muted check-reason" }, latest.reason));
}

// The Bayesian reading beside the frequentist one: chance to beat the control, the expected
// loss of shipping each arm (relative to the control), the relative lift's credible interval.
function bayesianCard(analysis) {
  const rows = analysis.treatments.filter((t) => t.bayesian);
  if (rows.length === 0) return null;
  const pct = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(2)} %`);
  return card(`Bayesian reading (${analysis.primary_metric})`, table(rows, [
    ["Variant", (t) => t.variant_id],
    ["Chance to beat control", (t) => el("strong", { class: "chance-to-win" }, pct(t.bayesian.chance_to_win))],
    ["Risk if shipped", (t) => pct(t.bayesian.risk_treatment)],
    ["Risk if kept", (t) => pct(t.bayesian.risk_control)],
    ["Lift", (t) => pct(t.bayesian.relative_lift)],
    [`${Math.round((rows[0].bayesian.credible_level || 0.95) * 100)} % credible interval`,
      (t) => (t.bayesian.credible_interval ? t.bayesian.credible_interval.map(pct).join(" … ") : "–")],
    ["Decision", (t) => t.bayesian.decision],
  ]), el("p", { class: "muted" }, `Prior: ${rows[0].bayesian.prior}. Decisions use the `
    + `${analysis.decision_engine} engine${analysis.risk_threshold == null ? "" : ` (risk threshold ${pct(analysis.risk_threshold)})`}.`));
}

// Per-segment tests with the declared correction; flagged segments disagree with the overall.
function segmentsCard(segments) {
  if (!segments || segments.dimensions.length === 0) return null;
  const shown = segments.top.slice(0, 10);
  const metrics = (segments.metrics || [segments.primary_metric]).join(", ");
  const untested = (segments.untested || []).map((u) => `${u.metric} (${u.kind})`).join(", ");
  return card("Segments", el("p", { class: "muted" }, `${segments.tests.length} segment test(s) on `
    + `${metrics}, ${segments.correction} correction at α ${segments.alpha} over all of them; `
    + `${segments.flagged.length} flagged.${untested ? ` Not tested per segment: ${untested}.` : ""}`),
  shown.length === 0 ? el("p", { class: "muted" }, "No segment has data yet.") : table(shown, [
    ["Segment", (t) => `${t.dimension} = ${t.value}`], ["Metric", (t) => t.metric || segments.primary_metric],
    ["Variant", (t) => t.variant_id],
    ["Control", (t) => fmt(t.control_value)], ["Treatment", (t) => fmt(t.treatment_value)],
    ["Difference", (t) => fmt(t.difference)], ["Adjusted p", (t) => fmt(t.adjusted_p_value, 3)],
    ["Flag", (t) => (t.flagged ? el("span", { class: "bad segment-flag" }, t.flag_reason || "flagged") : "")],
  ]));
}

async function load(experimentId) {
  const base = `/experiments/${q(experimentId)}`;
  const withChecks = await has("GET", "/experiments/{experiment_id}/checks");
  const withSegments = await has("GET", "/experiments/{experiment_id}/segments");
  const [experiment, metrics, analysis, policy, checks, segments] = await Promise.all([
    get(base), get(`${base}/metrics`), get(`${base}/analysis`), get(`${base}/rollback-policy`),
    withChecks ? get(`${base}/checks`) : null, withSegments ? get(`${base}/segments`) : null,
  ]);
  return { experiment, metrics: metrics.variants, analysis, policy, checks, segments };
}

export async function experimentDetail(experimentId, scheduled) {
  const seen = history(experimentId);
  const render = async () => {
    const { experiment, metrics, analysis, policy, checks, segments } = await load(experimentId);
    seen.add({
      t: Date.now(),
      ci: Object.fromEntries(analysis.treatments.map((t) => [t.variant_id, t.confidence_interval])),
    });
    const series = analysis.treatments.map((t) => ({
      label: `${t.variant_id} − control (${t.metric_name})`,
      points: seen.samples.map((s, i) => {
        const [low, high] = s.ci[t.variant_id] || [null, null];
        return { t: i, low, high, mid: low === null || high === null ? null : (low + high) / 2 };
      }),
    }));
    show(
      el("h1", {}, experiment.name, " ", badge(experiment.status)),
      el("p", { class: "muted" }, `${experiment.experiment_id} · ${experiment.allocation_strategy} · `
        + `started ${when(experiment.start_time)} · owner ${experiment.owner || "–"}`),
      card("Live metrics per variant", variantsTable(experiment, metrics),
        el("p", { class: "muted" }, `Refreshed every ${REFRESH_MS / 1000} s, ${new Date().toLocaleTimeString()}`)),
      el("div", { class: "grid" },
        card("Confidence interval over time", intervalChart(series),
          el("p", { class: "muted" }, `${analysis.primary_metric}: interval of the difference to the control at each refresh this tab made (${seen.samples.length})`)),
        card("Allocation over time", ...allocationHistory(experiment),
          el("p", { class: "muted allocation-note" }, allocationNote(experiment)))),
      bayesianCard(analysis),
      segmentsCard(segments),
      checkCard(checks),
      card("Guardrails and decisions", ...decisions(experiment, analysis, policy)),
    );
  };
  await render();
  scheduled(setInterval(() => render().catch(() => {}), REFRESH_MS));
}
