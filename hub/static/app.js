"use strict";
// The store dashboard: reads the JSON API, draws the numbers and charts, refreshes by polling.
(function () {
  const REFRESH_MS = Math.max(10, Number(new URLSearchParams(location.search).get("refresh")) || 20) * 1000;
  const $ = (id) => document.getElementById(id);
  const charts = window.FootfallCharts;
  let timer = null;

  const pct = (v) => (v == null ? "–" : (v * 100).toFixed(1) + " %");
  const num = (v) => (v == null ? "–" : Number(v).toLocaleString());
  function dur(s) {
    if (s == null) return "–";
    if (s < 60) return Math.round(s) + " s";
    if (s < 3600) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  function isoDay(d) {
    const z = new Date(d.getTime() - d.getTimezoneOffset() * 60000);
    return z.toISOString().slice(0, 10);
  }
  function addDays(day, n) {
    const d = new Date(day + "T12:00:00");
    d.setDate(d.getDate() + n);
    return isoDay(d);
  }
  function spanDays(start, end) {
    return Math.round((new Date(end + "T12:00:00") - new Date(start + "T12:00:00")) / 86400000) + 1;
  }

  async function api(path) {
    const res = await fetch(path, {credentials: "same-origin", headers: {Accept: "application/json"}});
    if (res.status === 401) {
      location.assign("/login");
      throw new Error("not logged in");
    }
    if (!res.ok) {
      const body = await res.json().catch(() => ({}));
      throw new Error(typeof body.detail === "string" ? body.detail : `${path}: HTTP ${res.status}`);
    }
    return res.json();
  }

  function range() {
    return {start: $("start").value, end: $("end").value};
  }

  function granularity(start, end) {
    const days = spanDays(start, end);
    return days <= 2 ? "hour" : days <= 62 ? "day" : "week";
  }

  function change(el, rel, suffix) {
    el.classList.remove("up", "down");
    if (rel == null) {
      el.textContent = "no comparison yet";
      return;
    }
    el.classList.add(rel >= 0 ? "up" : "down");
    el.textContent = (rel >= 0 ? "▲ +" : "▼ ") + suffix(rel) + " vs same weekday last week";
  }

  function drawNow(now) {
    $("now-in-store").textContent = num(now.now_in_store);
    $("now-source").textContent = now.source === "presence"
      ? `live from ${now.zones.length} sensor${now.zones.length === 1 ? "" : "s"}`
      : `visits ended in the last ${Math.round(now.window_s / 60)} min`;
  }

  function drawCompare(cmp) {
    $("today-visitors").textContent = num(cmp.today.visitors);
    change($("today-vs"), cmp.change.visitors, (v) => (v * 100).toFixed(0) + " %");
    $("today-capture").textContent = pct(cmp.today.capture_rate);
    change($("capture-vs"), cmp.change.capture_rate_points, (v) => (v * 100).toFixed(1) + " pts");
    charts.bars($("chart-compare"), {
      labels: cmp.hourly.map((h) => String(h.hour).padStart(2, "0")),
      series: [
        {name: "Today", values: cmp.hourly.map((h) => h.today), cls: "visitors"},
        {name: "Last week", values: cmp.hourly.map((h) => h.last_week), cls: "lastweek"},
      ],
      labelEvery: 3,
      height: 200,
    });
  }

  function drawFootfall(ff) {
    const t = ff.totals;
    $("range-visitors").textContent = num(t.visitors);
    $("range-passersby").textContent = num(t.passersby);
    $("range-capture").textContent = pct(t.capture_rate);
    $("footfall-gran").textContent = "by " + ff.granularity;
    const label = (p) => (ff.granularity === "hour" ? p.slice(11, 13) + (ff.start === ff.end ? "" : " " + p.slice(5, 10))
      : p.slice(5, 10));
    let series = ff.series;
    if (ff.granularity === "hour" && ff.start === ff.end) {
      // Trading hours only: drop the empty night, keep at least 8:00-20:00.
      const busy = series.map((s, i) => (s.visitors + s.passersby > 0 || (i >= 8 && i <= 20) ? i : -1)).filter((i) => i >= 0);
      series = series.slice(Math.min(...busy), Math.max(...busy) + 1);
    }
    charts.bars($("chart-footfall"), {
      labels: series.map((s) => label(s.period)),
      series: [
        {name: "Visitors", values: series.map((s) => s.visitors), cls: "visitors"},
        {name: "Passers-by", values: series.map((s) => s.passersby), cls: "passersby"},
      ],
      stacked: true,
      // A rate of 1 visitor out of 1 says nothing: leave thin hours off the line.
      line: {name: "Capture rate", values: series.map((s) => (s.visitors + s.passersby >= 10 ? s.capture_rate : null)), cls: "capture", max: 1, fmt: (v) => Math.round(v * 100) + "%"},
      height: 250,
    });
  }

  function drawEngagement(en) {
    $("median-dwell").textContent = dur(en.median_dwell_s);
    $("mean-dwell").textContent = dur(en.mean_dwell_s);
    charts.bars($("chart-dwell"), {
      labels: en.buckets.map((b) => b.bucket),
      series: [{name: "Visits", values: en.buckets.map((b) => b.visits), cls: "visitors"}],
      labelEvery: 1,
      height: 200,
    });
  }

  function drawLoyalty(lo) {
    $("return-rate").textContent = pct(lo.return_rate);
    $("unique-visitors").textContent = num(lo.unique_visitors);
    $("new-visitors").textContent = num(lo.new_visitors);
    $("returning-visitors").textContent = num(lo.returning_visitors);
    for (const f of lo.frequency) $("freq-" + f.frequency).textContent = pct(f.share);
    $("median-gap").textContent = lo.median_days_since_last_visit == null ? "–" : lo.median_days_since_last_visit + " d";
    charts.donut($("chart-loyalty"), [
      {name: "New", value: lo.new_visitors, cls: "visitors"},
      {name: "Returning", value: lo.returning_visitors, cls: "returning"},
    ], pct(lo.return_rate));
  }

  function ago(s) {
    if (s == null) return "never";
    if (s < 90) return Math.round(s) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }

  function drawSensors(se, rj) {
    const rows = se.sensors.map((s) => {
      const tr = document.createElement("tr");
      const cells = [s.sensor, s.status, ago(s.last_message_age_s), s.message_rate == null ? "–" : s.message_rate.toFixed(1),
        s.backlog == null ? "–" : num(s.backlog)];
      cells.forEach((c, i) => {
        const td = document.createElement("td");
        if (i === 1) {
          const dot = document.createElement("span");
          dot.className = "dot " + s.status;
          td.append(dot, " " + c);
        } else td.textContent = c;
        tr.appendChild(td);
      });
      return tr;
    });
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 5;
      td.textContent = "No sensor has reported yet.";
      tr.appendChild(td);
      rows.push(tr);
    }
    $("sensors").replaceChildren(...rows);
    $("rejects").textContent = rj.total ? `${num(rj.total)} malformed or unknown messages rejected (` +
      rj.reasons.map((r) => `${r.reason}: ${num(r.count)}`).join(", ") + ")" : "No rejected messages.";
  }

  function cell(tr, content, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    if (content instanceof Node) td.appendChild(content);
    else td.textContent = content;
    tr.appendChild(td);
    return td;
  }

  function emptyRow(cols, text) {
    const tr = document.createElement("tr");
    cell(tr, text, "empty").colSpan = cols;
    return tr;
  }

  function trend(history) {
    const box = document.createElement("span");
    const counts = history.map((h) => h.members);
    const title = history.map((h) => `${new Date(h.ts * 1000).toLocaleString()}: ${num(h.members)}`).join("\n");
    charts.spark(box, counts, title);
    return box;
  }

  function drawSegments(sg, cl) {
    // Rule segments here; the clusters (also stored as segments) get their own table.
    const rows = sg.segments.filter((s) => s.kind === "rule").map((s) => {
      const tr = document.createElement("tr");
      tr.dataset.segment = s.name;
      const name = document.createElement("span");
      const def = document.createElement("span");
      def.className = "def";
      def.textContent = `${s.mode} · ${s.rule || ""}`;
      name.append(s.name, def);
      cell(tr, name);
      cell(tr, num(s.size), "num size");
      cell(tr, trend(s.history));
      const p = s.profile;
      cell(tr, p ? p.median_dwell_min.toFixed(1) + " min" : "–", "num");
      cell(tr, p ? pct(p.visitor_share) : "–", "num");
      cell(tr, p ? p.typical_time : "–", "num");
      return tr;
    });
    $("segments").replaceChildren(...(rows.length ? rows : [emptyRow(6, "No segments yet.")]));

    const max = Math.max(1, ...cl.clusters.map((c) => c.size));
    const crows = cl.clusters.map((c) => {
      const tr = document.createElement("tr");
      tr.dataset.cluster = c.label;
      cell(tr, c.label);
      const size = document.createElement("span");
      size.className = "sizebar";
      const wrap = document.createElement("span");
      wrap.className = "bar-wrap";
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.display = "block";
      bar.style.width = ((100 * c.size) / max).toFixed(1) + "%";
      wrap.appendChild(bar);
      const n = document.createElement("b");
      n.className = "size";
      n.textContent = num(c.size);
      size.append(wrap, n, " " + (c.share == null ? "" : `(${pct(c.share)})`));
      cell(tr, size);
      const p = c.profile;
      cell(tr, p ? p.median_dwell_min.toFixed(1) + " min" : "–", "num");
      cell(tr, p ? p.typical_time : "–", "num");
      cell(tr, p ? p.visit_days.toFixed(1) : "–", "num");
      return tr;
    });
    $("clusters").replaceChildren(...(crows.length ? crows : [emptyRow(5, "No clusters yet.")]));
    $("clusters-meta").textContent = cl.k
      ? `k = ${cl.k}` + (cl.silhouette == null ? "" : `, silhouette ${cl.silhouette.toFixed(2)}`) +
        ` · ${num(cl.devices)} devices · ${new Date(cl.as_of * 1000).toLocaleString()}`
      : "";
  }

  function csvLinks(q, gran) {
    $("csv-footfall").href = `/api/footfall?${q}&granularity=${gran}&format=csv`;
    $("csv-engagement").href = `/api/engagement?${q}&format=csv`;
    $("csv-loyalty").href = `/api/loyalty?${q}&format=csv`;
    $("csv-compare").href = "/api/compare?format=csv";
    $("csv-sensors").href = "/api/sensors?format=csv";
  }

  async function refresh() {
    clearTimeout(timer);
    const {start, end} = range();
    const q = `start=${encodeURIComponent(start)}&end=${encodeURIComponent(end)}`;
    const gran = granularity(start, end);
    document.querySelectorAll(".range-label").forEach((e) => (e.textContent = start === end ? start : `${start} – ${end}`));
    csvLinks(q, gran);
    try {
      const [now, cmp, ff, en, lo, se, rj, sg, cl] = await Promise.all([
        api("/api/now"), api("/api/compare"), api(`/api/footfall?${q}&granularity=${gran}`),
        api(`/api/engagement?${q}`), api(`/api/loyalty?${q}`), api("/api/sensors"), api("/api/rejects"),
        api("/api/segments"), api("/api/clusters"),
      ]);
      drawNow(now);
      drawCompare(cmp);
      drawFootfall(ff);
      drawEngagement(en);
      drawLoyalty(lo);
      drawSensors(se, rj);
      drawSegments(sg, cl);
      $("error").hidden = true;
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
      document.body.dataset.loaded = "1";
    } catch (e) {
      $("error").textContent = e.message;
      $("error").hidden = false;
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }

  function setDays(days) {
    const today = $("end").dataset.today;
    $("end").value = today;
    $("start").value = addDays(today, 1 - days);
    document.querySelectorAll("[data-days]").forEach((b) => b.classList.toggle("active", Number(b.dataset.days) === days));
  }

  async function init() {
    const me = await api("/auth/me");
    $("user").textContent = me.name;
    // "Today" is the store's day: the compare report says which day that is.
    const cmp = await api("/api/compare");
    $("end").dataset.today = cmp.today.date;
    setDays(1);
    document.querySelectorAll("[data-days]").forEach((b) => b.addEventListener("click", () => {
      setDays(Number(b.dataset.days));
      refresh();
    }));
    $("range").addEventListener("submit", (ev) => {
      ev.preventDefault();
      if ($("end").value < $("start").value) {
        $("error").textContent = "The end date is before the start date.";
        $("error").hidden = false;
        return;
      }
      document.querySelectorAll("[data-days]").forEach((b) => b.classList.remove("active"));
      refresh();
    });
    $("logout").addEventListener("click", async () => {
      await fetch("/auth/logout", {method: "POST", credentials: "same-origin"});
      location.assign("/login");
    });
    let resizeTimer;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(refresh, 300);
    });
    refresh();
  }

  init().catch((e) => {
    $("error").textContent = e.message;
    $("error").hidden = false;
  });
})();
