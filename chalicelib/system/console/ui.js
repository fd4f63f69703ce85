// Small DOM helpers: text goes in as text nodes only, so API data can never become markup.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "onclick" || name === "onsubmit" || name === "onchange") node[name] = value;
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function fmt(value, digits = 4) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return value.toLocaleString("en-US");
    return Number(value.toPrecision(digits)).toString();
  }
  if (Array.isArray(value)) return value.map((v) => fmt(v, digits)).join(", ");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export function when(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", " UTC") : "–";
}

export function badge(text) {
  return el("span", { class: `badge ${text}` }, text);
}

// A table: columns are [header, row => cell] pairs; onRow makes rows clickable.
export function table(rows, columns, onRow, selected) {
  const head = el("tr", {}, columns.map(([title]) => el("th", {}, title)));
  const body = rows.map((row) => el("tr", {
    class: [onRow ? "clickable" : "", selected && selected(row) ? "selected" : ""].join(" ").trim(),
    onclick: onRow ? () => onRow(row) : undefined,
  }, columns.map(([, cell]) => el("td", {}, cell(row)))));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, body));
}

export function card(title, ...children) {
  return el("section", { class: "card" }, title ? el("h2", {}, title) : null, ...children);
}

export function errorBox(error) {
  return el("p", { class: "error" }, `Error: ${error.message || error}`);
}

export function show(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...nodes.filter((node) => node !== null && node !== undefined));
  return main;
}
