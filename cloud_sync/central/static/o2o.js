"use strict";
const pct = (x) => (x == null ? "–" : `${(x * 100).toFixed(1)} %`);
const num = (x) => (x == null ? "–" : x.toLocaleString("en-US", {maximumFractionDigits: 2}));

async function loadResults() {
  const f = new FormData($("#period"));
  const q = new URLSearchParams({start: f.get("start"), end: f.get("end")});
  $("#csv").href = `/api/v1/o2o/results?${q}&format=csv`;
  $("#error").textContent = "";
  try {
    const res = await api(`/api/v1/o2o/results?${q}`);
    const tb = $("#results tbody"); tb.replaceChildren();
    for (const r of [...res.rows, ...res.totals]) {
      tb.appendChild(row([r.store === "*" ? "all stores" : r.store, r.scenario, num(r.eligible), num(r.control),
        num(r.matched), pct(r.match_rate), num(r.messaged), num(r.segment), num(r.coupons_redeemed), num(r.revenue),
        num(r.costs), num(r.romi), pct(r.uplift), num(r.invoice)]));
    }
    if (!res.rows.length) tb.appendChild(row(["no scenario results in this period"]));
  } catch (e) { $("#error").textContent = e.message; }
}

async function loadExports() {
  const {exports} = await api("/api/v1/exports");
  const tb = $("#exports tbody"); tb.replaceChildren();
  for (const e of exports) {
    tb.appendChild(row([new Date(e.ts * 1000).toISOString().replace("T", " ").slice(0, 16), e.who, e.segment,
      e.format, num(e.rows), num(e.bytes), (e.sha256 || "").slice(0, 16), e.warning]));
  }
}

const today = new Date();
const ago = new Date(today.getTime() - 29 * 86400e3);
$("#period").start.value = ago.toISOString().slice(0, 10);
$("#period").end.value = today.toISOString().slice(0, 10);
$("#period").addEventListener("submit", (ev) => { ev.preventDefault(); loadResults(); });
loadResults();
loadExports();
