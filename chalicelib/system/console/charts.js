// SVG charts drawn from API data: confidence intervals over time, allocation over time,
// an explanation waterfall, importance bars and a lineage graph.
const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function frame(width, height, label) {
  return svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
                      "aria-label": label });
}

function scale(min, max, from, to) {
  const span = max - min || 1;
  return (value) => from + ((value - min) / span) * (to - from);
}

// series: [{label, points: [{t, low, high, mid}]}]; one band and one line per series.
export function intervalChart(series, width = 560, height = 220) {
  const root = frame(width, height, "confidence interval over time");
  root.classList.add("ci-chart");
  const all = series.flatMap((s) => s.points).filter((p) => p.low !== null && p.high !== null);
  if (all.length === 0) {
    root.append(svg("text", { x: 10, y: 20 }, "no interval yet (needs outcomes in every arm)"));
    return root;
  }
  const times = all.map((p) => p.t);
  const values = all.flatMap((p) => [p.low, p.high, 0]);
  const x = scale(Math.min(...times), Math.max(Math.max(...times), Math.min(...times) + 1), 60, width - 10);
  const low = Math.min(...values);
  const high = Math.max(...values);
  const y = scale(low, high, height - 25, 10);
  root.append(svg("text", { x: 4, y: 14 }, high.toPrecision(3)));
  root.append(svg("text", { x: 4, y: height - 25 }, low.toPrecision(3)));
  root.append(svg("line", { x1: 60, x2: width - 10, y1: y(0), y2: y(0), stroke: "#999",
                            "stroke-dasharray": "4 3" }));
  root.append(svg("text", { x: width - 22, y: y(0) - 4 }, "0"));
  const colours = ["#2f6fde", "#e37400", "#188038", "#a142f4"];
  series.forEach((s, index) => {
    const points = s.points.filter((p) => p.low !== null && p.high !== null);
    if (points.length === 0) return;
    const colour = colours[index % colours.length];
    const upper = points.map((p) => `${x(p.t)},${y(p.high)}`);
    const lower = points.slice().reverse().map((p) => `${x(p.t)},${y(p.low)}`);
    if (points.length === 1) {
      const p = points[0];
      root.append(svg("line", { x1: x(p.t), x2: x(p.t), y1: y(p.low), y2: y(p.high),
                                stroke: colour, "stroke-width": 6, class: "ci-band" }));
    } else {
      root.append(svg("polygon", { points: [...upper, ...lower].join(" "), fill: colour,
                                   "fill-opacity": 0.18, class: "ci-band" }));
      root.append(svg("polyline", { points: points.map((p) => `${x(p.t)},${y(p.mid)}`).join(" "),
                                    fill: "none", stroke: colour, "stroke-width": 2 }));
    }
    root.append(svg("text", { x: 66, y: 14 + 14 * index, fill: colour }, s.label));
  });
  root.append(svg("text", { x: 60, y: height - 6 }, "each refresh →"));
  return root;
}

// samples: [{t, weights: {variant: number}}]; stacked bars of the effective weights.
export function allocationChart(samples, width = 560, height = 120) {
  const root = frame(width, height, "allocation over time");
  root.classList.add("allocation-chart");
  if (samples.length === 0) return root;
  const names = Object.keys(samples[samples.length - 1].weights);
  const colours = ["#2f6fde", "#e37400", "#188038", "#a142f4", "#c5221f"];
  const step = (width - 60) / samples.length;
  samples.forEach((sample, i) => {
    let top = 10;
    names.forEach((name, k) => {
      const share = Number(sample.weights[name] || 0);
      const h = share * (height - 30);
      root.append(svg("rect", { x: 50 + i * step, y: top, width: Math.max(step - 1, 1), height: h,
                                fill: colours[k % colours.length] }));
      top += h;
    });
  });
  names.forEach((name, k) => root.append(
    svg("text", { x: 50 + k * 110, y: height - 4, fill: colours[k % colours.length] }, name)));
  return root;
}

// A SHAP/LIME waterfall: from the base value, one step per feature, to the prediction.
export function waterfall(explanation, width = 620) {
  const rows = explanation.feature_contributions.slice()
    .sort((a, b) => Math.abs(b.contribution) - Math.abs(a.contribution)).slice(0, 12);
  const height = 40 + rows.length * 24;
  const root = frame(width, height, "explanation waterfall");
  root.classList.add("waterfall");
  let running = explanation.base_prediction;
  const steps = rows.map((row) => {
    const start = running;
    running += row.contribution;
    return { row, start, end: running };
  });
  const values = [explanation.base_prediction, explanation.actual_prediction,
                  ...steps.flatMap((s) => [s.start, s.end])];
  const x = scale(Math.min(...values), Math.max(...values), 200, width - 70);
  steps.forEach(({ row, start, end }, i) => {
    const yTop = 10 + i * 24;
    root.append(svg("text", { x: 4, y: yTop + 14 }, `${row.feature_name} = ${row.feature_value}`));
    root.append(svg("rect", { x: Math.min(x(start), x(end)), y: yTop,
                              width: Math.max(Math.abs(x(end) - x(start)), 1), height: 18,
                              fill: row.contribution >= 0 ? "#d93025" : "#1a73e8",
                              class: "waterfall-bar" }));
    root.append(svg("text", { x: Math.max(x(start), x(end)) + 4, y: yTop + 14 },
                    (row.contribution >= 0 ? "+" : "") + row.contribution.toPrecision(3)));
  });
  const bottom = 14 + rows.length * 24;
  root.append(svg("text", { x: 4, y: bottom + 12 },
    `base ${explanation.base_prediction.toPrecision(4)} → prediction `
    + `${explanation.actual_prediction.toPrecision(4)} (${explanation.output_space})`));
  return root;
}

// Horizontal bars of {name: value}, largest first.
export function bars(values, width = 560) {
  const rows = Object.entries(values).sort((a, b) => b[1] - a[1]).slice(0, 15);
  const height = 10 + rows.length * 22;
  const root = frame(width, height, "global importance");
  root.classList.add("importance");
  const top = Math.max(...rows.map(([, v]) => v), 1e-12);
  rows.forEach(([name, value], i) => {
    root.append(svg("text", { x: 4, y: 20 + i * 22 }, name));
    root.append(svg("rect", { x: 160, y: 6 + i * 22, height: 16, fill: "#2f6fde",
                              width: Math.max((value / top) * (width - 240), 1),
                              class: "importance-bar" }));
    root.append(svg("text", { x: 166 + (value / top) * (width - 240), y: 20 + i * 22 },
                    value.toPrecision(3)));
  });
  return root;
}

// A lineage DAG laid out in columns by depth from its roots.
export function lineageGraph(nodes, edges, focus, onNode) {
  const parents = new Map(nodes.map((n) => [n.version_id, []]));
  edges.forEach((e) => parents.get(e.child_id)?.push(e.parent_id));
  const depth = new Map();
  const depthOf = (id, seen = new Set()) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    const mine = Math.max(-1, ...(parents.get(id) || []).map((p) => depthOf(p, seen))) + 1;
    depth.set(id, mine);
    return mine;
  };
  nodes.forEach((n) => depthOf(n.version_id));
  const columns = new Map();
  nodes.forEach((n) => {
    const d = depth.get(n.version_id);
    if (!columns.has(d)) columns.set(d, []);
    columns.get(d).push(n);
  });
  const width = 40 + columns.size * 190;
  const height = 30 + Math.max(...[...columns.values()].map((c) => c.length)) * 60;
  const root = frame(width, height, "lineage graph");
  root.classList.add("lineage");
  const place = new Map();
  for (const [d, column] of columns) {
    column.forEach((n, i) => place.set(n.version_id, { x: 20 + d * 190, y: 15 + i * 60 }));
  }
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
                                 markerWidth: 6, markerHeight: 6, orient: "auto" });
  marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#667085" }));
  defs.append(marker);
  root.append(defs);
  edges.forEach((e) => {
    const a = place.get(e.parent_id);
    const b = place.get(e.child_id);
    if (!a || !b) return;
    root.append(svg("line", { x1: a.x + 150, y1: a.y + 20, x2: b.x, y2: b.y + 20,
                              stroke: "#667085", "marker-end": "url(#arrow)" }));
    if (e.transformation_type) {
      root.append(svg("text", { x: (a.x + 150 + b.x) / 2 - 20, y: (a.y + b.y) / 2 + 14 },
                      e.transformation_type));
    }
  });
  nodes.forEach((n) => {
    const p = place.get(n.version_id);
    const group = svg("g", { class: "lineage-node", "data-version": n.version_id });
    group.append(svg("rect", { x: p.x, y: p.y, width: 150, height: 40, rx: 5,
                               fill: n.version_id === focus ? "#e3ecfc" : "#fff",
                               stroke: n.visible === false ? "#bbb" : "#2f6fde" }));
    const label = n.visible === false ? "(not visible)" : `v${n.version_number}`;
    group.append(svg("text", { x: p.x + 8, y: p.y + 17 }, label));
    group.append(svg("text", { x: p.x + 8, y: p.y + 32 }, n.version_id));
    if (onNode && n.visible !== false && n.dataset_id) {
      group.style.cursor = "pointer";
      group.addEventListener("click", () => onNode(n));
    }
    root.append(group);
  });
  return root;
}
