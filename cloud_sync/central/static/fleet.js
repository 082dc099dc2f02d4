"use strict";
// The fleet page: /api/v1/fleet already sorts worst first; this only draws it.
const fmtAge = (s) => (s == null ? "never" : s < 120 ? `${Math.round(s)} s ago` : s < 7200 ? `${Math.round(s / 60)} min ago`
  : s < 172800 ? `${Math.round(s / 3600)} h ago` : `${Math.round(s / 86400)} d ago`);
const fmtBytes = (b) => (b == null ? "" : b >= 1e9 ? `${(b / 1e9).toFixed(1)} GB` : `${Math.round(b / 1e6)} MB`);
const CLASS = {down: "bad", stale: "warn", warning: "warn", notice: "", ok: "ok"};
let warnDays = 30;
let asOf = null;  // the centre's time of the tables shown (every time on this page is the centre's)

function state(r) {
  const text = r.problems && r.problems.length ? r.problems.join("; ") : "ok";
  return cell(text, CLASS[r.level]);
}

// Days left come from the centre (its clock), like every time on this page.
function expiry(ts, days) {
  if (!ts) return "";
  const left = days <= 0 ? "expired" : days < 2 ? `${Math.round(days * 24)} h left` : `${Math.round(days)} d`;
  return cell(`${fmtTime(ts)} (${left})`, days <= 0 ? "bad" : days <= warnDays ? "warn" : "");
}

async function load() {
  const data = await api("/api/v1/fleet");
  asOf = data.as_of;
  warnDays = data.warn_days;
  const down = data.sensors.filter((s) => s.level === "down").length;
  const stale = data.stores.filter((s) => s.report_stale).length;
  $("#summary").textContent = `${data.stores.length} stores, ${data.sensors.length} sensors: ${down} down; `
    + `${stale} of them without a report in the last ${Math.round(data.stale_after_s / 3600)} h. As of ${fmtTime(data.as_of)} UTC.`;
  const st = $("#stores tbody"); st.replaceChildren();
  for (const s of data.stores) {
    const mqtt = s.mqtt_connected == null ? "" : cell(s.mqtt_connected ? "up" : "down", s.mqtt_connected ? "ok" : "bad");
    const disk = s.disk_free_bytes == null ? "" : `${fmtBytes(s.disk_free_bytes)} (${Math.round(100 * s.disk_free_bytes / s.disk_size_bytes)}%)`;
    const report = s.report_received ? cell(fmtAge(s.report_age_s), s.report_stale ? "warn" : "") : cell("never", "warn");
    st.appendChild(row([s.store_name || s.store, state(s), report, s.report_received ? fmtAge(s.last_ingest_age_s) : "", mqtt, disk,
      expiry(s.crl_next_update, s.crl_days_left), expiry(s.hub_cert_expiry, s.hub_cert_days_left), s.sensors_total == null ? "" : `${s.sensors_down} / ${s.sensors_total}`],
    `level-${s.level}`));
  }
  const tb = $("#sensors tbody"); tb.replaceChildren();
  for (const s of data.sensors) {
    tb.appendChild(row([s.store_name || s.store, s.sensor, state(s), fmtAge(s.last_ingest_age_s), s.visits_24h,
      expiry(s.cert_expiry, s.cert_days_left)], `level-${s.level}`));
  }
}

// An operator leaves this page open on a wall screen: it refreshes every minute (?refresh=N
// seconds) while visible, at once when shown again, and a failed refresh keeps the last table
// and says since when it is that old, rather than blanking the page.
const REFRESH_S = Math.max(1, Number(new URLSearchParams(location.search).get("refresh")) || 60);

async function refresh() {
  const note = $("#refreshed");
  try {
    await load();
    note.textContent = `Refreshed every ${REFRESH_S} s while this page is shown.`;
    note.className = "";
  } catch (e) {
    const since = asOf ? `the tables are as of ${fmtTime(asOf)} UTC` : "nothing loaded yet";
    note.textContent = `Not refreshed: ${e.message}; ${since}. Trying again in ${REFRESH_S} s.`;
    note.className = "warn";
  }
}

setInterval(() => { if (document.visibilityState === "visible") refresh(); }, REFRESH_S * 1000);
document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") refresh(); });

$("#logout").onclick = async () => { await fetch("/api/v1/logout", {method: "POST"}); location.href = "/login"; };

(async () => {
  const me = await api("/api/v1/me");
  $("#who").textContent = `${me.name} (${me.role}${me.stores ? ": " + me.stores.join(", ") : ""})`;
  await refresh();
})();
