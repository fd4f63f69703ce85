// The console's only way to data: the public HTTP API, with the token from sessionStorage.
const KEY = "synapse-token";

// The API's base: the console is served at <base>/console (API Gateway adds a stage prefix).
export const base = window.location.pathname.replace(/\/console(\/.*)?$/, "");

export function token() {
  return window.sessionStorage.getItem(KEY);
}

export function setToken(value) {
  window.sessionStorage.setItem(KEY, value.trim());
}

export function forgetToken() {
  window.sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, body) {
    super(`${status} ${body && body.error ? body.error + ": " + body.message : ""}`);
    this.status = status;
    this.body = body;
  }
}

let routes = null;

// Calls one route; JSON in, JSON out; errors raise ApiError (401 sends the user back to login).
export async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  const current = token();
  if (current) headers.Authorization = `Bearer ${current}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(base + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    if (response.status === 401) window.dispatchEvent(new CustomEvent("synapse-unauthorized"));
    throw new ApiError(response.status, data);
  }
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body === undefined ? {} : body);

// Whether the server declares a route (for features other issues add: tags, drift, history).
export async function has(method, template) {
  if (routes === null) {
    const document = await get("/openapi.json");
    routes = new Set();
    for (const [path, item] of Object.entries(document.paths)) {
      for (const verb of Object.keys(item)) routes.add(`${verb.toUpperCase()} ${path}`);
    }
  }
  return routes.has(`${method} ${template}`);
}

export const q = encodeURIComponent;
