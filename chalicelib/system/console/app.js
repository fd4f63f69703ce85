// The console: a token form, then hash routes for experiments, datasets and models.
import { ApiError, forgetToken, get, setToken, token } from "./api.js";
import { datasetDetail, datasetList } from "./datasets.js";
import { experimentDetail, experimentList } from "./experiments.js";
import { modelDetail, modelList } from "./models.js";
import { el, errorBox, show } from "./ui.js";

let timers = [];

function clearTimers() {
  timers.forEach((t) => clearInterval(t));
  timers = [];
}

function loginForm(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  const input = el("input", { id: "token", type: "password", autocomplete: "off", placeholder: "snk_…" });
  const form = el("form", { class: "token card", onsubmit: (event) => {
    event.preventDefault();
    setToken(input.value);
    route();
  } },
  el("h1", {}, "Sign in with an API token"),
  el("p", { class: "muted" }, "The token stays in this tab (sessionStorage) and is sent only to this API."),
  message ? el("p", { class: "error" }, message) : null,
  input, el("button", { type: "submit", id: "sign-in" }, "Open the console"));
  show(form);
  input.focus();
}

const ROUTES = [
  [/^#\/experiments\/([^/]+)$/, (m) => experimentDetail(decodeURIComponent(m[1]), (t) => timers.push(t))],
  [/^#\/datasets\/([^/]+)\/(\d+)$/, (m) => datasetDetail(decodeURIComponent(m[1]), m[2])],
  [/^#\/datasets\/([^/]+)$/, (m) => datasetDetail(decodeURIComponent(m[1]))],
  [/^#\/models\/([^/]+)$/, (m) => modelDetail(decodeURIComponent(m[1]))],
  [/^#\/datasets$/, datasetList],
  [/^#\/models$/, modelList],
  [/^.*$/, experimentList],
];

async function route() {
  clearTimers();
  if (!token()) {
    loginForm();
    return;
  }
  try {
    const who = await get("/auth/whoami");
    document.getElementById("who").textContent = `${who.principal} (${who.roles.join(", ")})`;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      forgetToken();
      loginForm("That token was not accepted.");
      return;
    }
    show(errorBox(error));
    return;
  }
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  const hash = window.location.hash || "#/experiments";
  const section = hash.split("/")[1];
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.section === section));
  for (const [pattern, render] of ROUTES) {
    const match = hash.match(pattern);
    if (match) {
      try {
        await render(match);
      } catch (error) {
        show(errorBox(error));
      }
      return;
    }
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("synapse-unauthorized", () => { forgetToken(); loginForm("The token is no longer valid."); });
document.getElementById("logout").addEventListener("click", () => { forgetToken(); loginForm(); });
route();
