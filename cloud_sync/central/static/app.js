"use strict";
const fmtAge = (s) => (s == null ? "never" : s < 120 ? `${Math.round(s)} s ago` : s < 7200 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`);

async function loadStores() {
  const {stores} = await api("/api/v1/stores");
  const tb = $("#stores tbody"); tb.replaceChildren();
  for (const s of stores) {
    const stale = s.last_sync_age_s == null || s.last_sync_age_s > 3600;
    const sens = s.sensors ? `${s.sensors.total ?? "?"} (${s.sensors.stale ?? 0} / ${s.sensors.failing ?? 0})` : "no report";
    const sick = s.sensors && (s.sensors.stale || s.sensors.failing);
    const d = s.latest_day || {};
    tb.appendChild(row([s.name || s.hub_id, cell(fmtAge(s.last_sync_age_s), stale ? "bad" : "ok"),
      cell(sens, sick ? "bad" : ""), s.profiles, d.day, d.visitors,
      d.capture_rate == null ? "" : `${Math.round(d.capture_rate * 100)}%`]));
  }
}

function chart(title, versions) {
  $("#chart-title").textContent = title;
  const svg = $("#chart"); svg.replaceChildren();
  if (!versions.length) return;
  const max = Math.max(1, ...versions.map((v) => v.size));
  const step = versions.length > 1 ? 580 / (versions.length - 1) : 0;
  const pts = versions.map((v, i) => `${10 + i * step},${150 - (v.size / max) * 130}`).join(" ");
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", pts); line.setAttribute("fill", "none"); line.setAttribute("stroke", "#1d3557");
  line.setAttribute("stroke-width", "2"); svg.appendChild(line);
  const label = document.createElementNS("http://www.w3.org/2000/svg", "text");
  label.setAttribute("x", "12"); label.setAttribute("y", "16"); label.textContent = `max ${max}`; svg.appendChild(label);
}

function button(text, fn) { const b = document.createElement("button"); b.textContent = text; b.onclick = fn; return b; }

async function loadSegments() {
  const {segments} = await api("/api/v1/segments");
  const tb = $("#segments tbody"); tb.replaceChildren();
  for (const s of segments) {
    const l = s.latest || {};
    const actions = document.createElement("span");
    actions.append(
      button("recount", async () => { await api(`/api/v1/segments/${s.id}/recount`, {method: "POST"}); loadSegments(); }),
      button("history", async () => { const v = await api(`/api/v1/segments/${s.id}/versions`); chart(`${s.name}: size per recount`, v.versions); }),
    );
    for (const f of ["msisdn", "csv", "json"]) {
      const a = document.createElement("a"); a.href = `/api/v1/segments/${s.id}/export?format=${f}`; a.textContent = ` ${f}`;
      actions.append(a);
    }
    tb.appendChild(row([s.name, (s.stores || ["chain"]).join(", "), l.size, l.delta, l.version, actions]));
  }
}

$("#new-segment").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target; $("#segment-error").textContent = "";
  try {
    const stores = f.stores.value.split(",").map((x) => x.trim()).filter(Boolean);
    await api("/api/v1/segments", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({id: f.id.value, name: f.name.value, rule: JSON.parse(f.rule.value), stores: stores.length ? stores : null})});
    loadSegments();
  } catch (e) { $("#segment-error").textContent = e.message; }
});

$("#search").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const {profiles} = await api(`/api/v1/profiles?q=${encodeURIComponent(ev.target.q.value)}`);
  const tb = $("#profiles tbody"); tb.replaceChildren();
  for (const p of profiles) {
    const a = document.createElement("a"); a.href = "#"; a.textContent = p.device;
    a.onclick = async (e) => { e.preventDefault(); $("#profile").textContent = JSON.stringify(await api(`/api/v1/profiles/${p.device}`), null, 2); };
    tb.appendChild(row([a, p.stores, p.visits, fmtTime(p.last_seen)]));
  }
});

$("#logout").onclick = async () => { await fetch("/api/v1/logout", {method: "POST"}); location.href = "/login"; };

(async () => {
  const me = await api("/api/v1/me");
  $("#who").textContent = `${me.name} (${me.role}${me.stores ? ": " + me.stores.join(", ") : ""})`;
  await Promise.all([loadStores(), loadSegments()]);
})();
