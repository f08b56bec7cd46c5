// sid's page: the identity gallery, learn, render. Plain DOM, no build step, no network but this server.
"use strict";
const $ = (sel) => document.querySelector(sel);
let names = [];

async function api(path, options = {}) {
  const response = await fetch(path, options);
  if (response.status === 401) { $("#signin").hidden = false; }
  const body = await response.json();
  if (!response.ok) { throw new Error(body.error.message + (body.error.hint ? " — " + body.error.hint : "")); }
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
  children.forEach((c) => node.append(c));
  return node;
}

async function gallery() {
  const { identities } = await api("/api/identities");
  names = identities.map((i) => i.name);
  const grid = $("#gallery");
  grid.replaceChildren(...identities.map((i) => el("div", { class: "card identity", "data-name": i.name },
    i.thumbnail_url ? el("img", { src: i.thumbnail_url, alt: i.name }) : "",
    el("b", {}, i.name), el("div", { class: "meta" }, `${i.family} · ${i.method}`))));
  if (!identities.length) grid.append("No identities yet: learn one below.");
  highlight();
}

function highlight() {
  const text = $("#prompt").value;
  const escaped = text.replace(/&/g, "&amp;").replace(/</g, "&lt;");
  const known = new Set(names.map((n) => n.toLowerCase()));
  $("#highlight").innerHTML = escaped.replace(/@?[A-Za-z][A-Za-z0-9_\-]*/g,
    (w) => known.has(w.replace(/^@/, "").toLowerCase()) ? `<mark>${w}</mark>` : w) + "\n";
}

// Follow a job's Server-Sent Events until it ends; resolves with the final status event.
function follow(id, onEvent) {
  return new Promise((resolve) => {
    const source = new EventSource(`/api/jobs/${id}/events`);
    const handle = (e) => {
      const event = JSON.parse(e.data);
      onEvent(event);
      if (event.type === "status" && ["done", "failed", "cancelled"].includes(event.status)) {
        source.close(); resolve(event);
      }
    };
    ["status", "progress", "step", "phase", "warning", "image"].forEach((t) => source.addEventListener(t, handle));
  });
}

async function submit(kind, params, files) {
  const form = new FormData();
  form.append("kind", kind);
  form.append("params", JSON.stringify(params));
  files.forEach((f) => form.append("file", f, f.name));
  return api("/api/jobs", { method: "POST", body: form });
}

function say(id, text, error = false) { const p = $(id); p.textContent = text; p.classList.toggle("error", error); }

// -- learn
let dropped = [];
const drop = $("#drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  dropped = [...e.dataTransfer.files]; say("#learn-status", `${dropped.length} photo(s) ready`);
});
$("#learn").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  const photos = dropped.length ? dropped : [...$("#photos").files];
  const params = { names: [f.get("name")], method: f.get("method") };
  if (f.get("model")) params.model = f.get("model");
  if (f.get("steps")) params.steps = Number(f.get("steps"));
  if (params.method === "celebbasis" && photos.length > 1) params.names = photos.map((_, i) => `${f.get("name")}${i + 1}`);
  const bar = $("#learn-progress");
  try {
    const job = await submit("learn", params, photos);
    bar.hidden = false; bar.value = 0;
    const end = await follow(job.id, (ev) => {
      if (ev.type === "progress") { bar.max = ev.total; bar.value = ev.step; say("#learn-status", `step ${ev.step}/${ev.total}, loss ${ev.loss.toFixed(4)}`); }
      if (ev.type === "phase") say("#learn-status", ev.text);
      if (ev.type === "status" && ev.status === "queued") say("#learn-status", "queued");
    });
    if (end.status === "done") { say("#learn-status", `learned ${params.names.join(", ")}`); gallery(); }
    else say("#learn-status", end.error ? `${end.error.message} — ${end.error.hint}` : end.status, true);
  } catch (err) { say("#learn-status", err.message, true); }
});

// -- render
$("#prompt").addEventListener("input", highlight);
async function render(params, control) {
  const bar = $("#render-progress");
  try {
    const job = await submit("render", params, control ? [control] : []);
    bar.hidden = false; bar.value = 0; bar.max = params.count * params.steps;
    const end = await follow(job.id, (ev) => {
      if (ev.type === "step") { if (ev.total) bar.max = ev.total; bar.value += ev.advance; say("#render-status", "rendering"); }
      if (ev.type === "warning") say("#render-status", ev.text);
      if (ev.type === "image") show(job.id, ev, params, control);
    });
    say("#render-status", end.status === "done" ? "done" : (end.error ? `${end.error.message} — ${end.error.hint}` : end.status), end.status !== "done");
  } catch (err) { say("#render-status", err.message, true); }
}
function show(jobId, ev, params, control) {
  const url = `/api/jobs/${jobId}/files/${encodeURIComponent(ev.file)}`;
  const again = el("button", { type: "button" }, "same seed again");
  again.addEventListener("click", () => render({ ...params, seed: ev.seed, count: 1 }, control));
  const settings = `seed ${ev.seed} · ${params.steps} steps` + (params.size ? ` · ${params.size}` : "") + (params.model ? ` · ${params.model}` : "");
  $("#results").prepend(el("div", { class: "card result" },
    el("img", { src: url, alt: params.prompt }), el("div", {}, params.prompt), el("div", { class: "meta" }, settings),
    el("a", { href: url, download: ev.file }, "download"), " ", again));
}
$("#render").addEventListener("submit", (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  const params = { prompt: f.get("prompt"), count: Number(f.get("count")), steps: Number(f.get("steps")) };
  if (f.get("seed")) params.seed = Number(f.get("seed"));
  if (f.get("size")) params.size = f.get("size");
  if (f.get("model")) params.model = f.get("model");
  const control = f.get("control");
  const hasControl = control && control.size > 0;
  if (hasControl) params.control_type = f.get("control_type");
  render(params, hasControl ? control : null);
});

api("/api/server").then((s) => { $("#server").textContent = `${s.store} · ${Object.keys(s.devices).join(", ")}`; gallery(); })
  .catch(() => {});
