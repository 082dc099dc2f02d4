"use strict";
// What every page of the central service shares: loaded before the page's own script.
const $ = (sel) => document.querySelector(sel);
const fmtTime = (t) => (t ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 16) : "never");

async function api(path, opts) {
  const r = await fetch(path, opts);
  // Not signed in: go to the login page; the pending promise never settles, so nothing runs on.
  if (r.status === 401) { location.href = "/login"; return new Promise(() => {}); }
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new Error(body.error || body.detail || r.statusText);
  return body;
}

function row(cells, cls) {
  const tr = document.createElement("tr");
  if (cls) tr.className = cls;
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c ?? "";
    tr.appendChild(td);
  }
  return tr;
}

function cell(text, cls) { const s = document.createElement("span"); s.textContent = text; if (cls) s.className = cls; return s; }
