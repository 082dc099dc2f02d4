"use strict";
// The store dashboard: reads the JSON API, draws the numbers and charts, refreshes by polling.
//
// Every headline figure is an estimate of people with its 90 % range, beside what the sensors
// heard. Where the API says a figure is not estimated yet (`estimated` false) the page shows the
// heard count and says so: a heard count is never dressed up as an estimate. Every time on the
// page is the store's local time (its zone from /api/compare, named once in the header), never
// the browser's: a manager reading the dashboard from home or a head office elsewhere must see
// the shop's hours.
(function () {
  const REFRESH_MS = Math.max(10, Number(new URLSearchParams(location.search).get("refresh")) || 20) * 1000;
  const OCCUPANCY_MAX_DAYS = 14; // the API's limit for per-window series
  const OCCUPANCY_WINDOW_S = 600;
  const $ = (id) => document.getElementById(id);
  const charts = window.FootfallCharts;
  let timer = null;

  // ------------------------------------------------------------ formatting
  // Counts are whole people (ranges too), rates to 0.1 %, dwell to minutes.
  const num = (v) => (v == null ? "–" : Math.round(Number(v)).toLocaleString());
  const pct = (v) => (v == null ? "–" : (v * 100).toFixed(1) + " %");
  const pctBare = (v) => (v == null ? "–" : (v * 100).toFixed(1));
  function dur(s) {
    if (s == null) return "–";
    const m = Math.round(s / 60);
    if (s < 30) return "< 1 min";
    if (m < 60) return m + " min";
    return Math.floor(m / 60) + " h " + String(m % 60).padStart(2, "0") + " min";
  }
  function durBare(s) {
    return s == null ? "–" : String(Math.round(s / 60));
  }
  const plural = (n, one, many) => (Math.round(n) === 1 ? one : many);

  // A figure's range as text: "104–224" (counts), "10.9–39.6 %" (rates), "5–13 min" (dwell).
  function rangeText(kind, lo, hi) {
    if (lo == null || hi == null) return "";
    if (kind === "rate") return `${pctBare(lo)}–${pctBare(hi)} %`;
    if (kind === "dwell") return `${durBare(lo)}–${durBare(hi)} min`;
    return `${num(lo)}–${num(hi)}`;
  }
  function valueText(kind, v) {
    return kind === "rate" ? pct(v) : kind === "dwell" ? dur(v) : num(v);
  }

  // ------------------------------------------------------------ store time
  // The API gives UNIX times and, in /api/compare, the store's time zone and local HH:MM. Times
  // are formatted in that zone (right across a DST change); without it (an older hub) the
  // difference between local HH:MM and UTC gives the store's offset. The browser may be in
  // another time zone.
  const store = {offsetMin: 0, today: null, now: null, tz: null, fmt: null};
  function learnStoreClock(cmp) {
    if (cmp.tz && cmp.tz !== store.tz) {
      try {
        store.fmt = new Intl.DateTimeFormat("en-CA", {timeZone: cmp.tz, year: "numeric", month: "2-digit",
          day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23"});
        store.tz = cmp.tz;
      } catch (e) {
        store.fmt = null; // a zone this browser does not know: the offset below still holds
      }
    }
    const [hh, mm] = cmp.local_time.split(":").map(Number);
    const utcMin = Math.floor(cmp.as_of / 60) % 1440;
    let off = (((hh * 60 + mm - utcMin) % 1440) + 1440) % 1440;
    if (off > 840) off -= 1440;
    store.offsetMin = Math.round(off / 15) * 15;
    store.today = cmp.today.date;
    store.now = cmp.as_of;
  }
  function storeParts(unix) {
    if (store.fmt) {
      const p = Object.fromEntries(store.fmt.formatToParts(new Date(unix * 1000)).map((x) => [x.type, x.value]));
      return {day: `${p.year}-${p.month}-${p.day}`, hm: `${p.hour}:${p.minute}`};
    }
    const d = new Date((unix + store.offsetMin * 60) * 1000);
    const p2 = (n) => String(n).padStart(2, "0");
    return {
      day: `${d.getUTCFullYear()}-${p2(d.getUTCMonth() + 1)}-${p2(d.getUTCDate())}`,
      hm: `${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}`,
    };
  }
  // The UNIX time at which a store-local day ends (its next midnight).
  function dayEnd(day) {
    const [y, m, d] = day.split("-").map(Number);
    return Date.UTC(y, m - 1, d + 1) / 1000 - store.offsetMin * 60;
  }
  // "17:45" (today) or "2026-11-01 17:45" in store time.
  function storeText(unix) {
    const p = storeParts(unix);
    return p.day === store.today ? p.hm : `${p.day} ${p.hm}`;
  }
  // "as of 17:45" (today) or "as of 2026-11-01 17:45", never later than the store's clock.
  function asOfText(unix) {
    const t = store.now == null ? unix : Math.min(unix, store.now);
    const p = storeParts(t);
    return "as of " + (p.day === store.today ? p.hm : `${p.day} ${p.hm}`);
  }

  // ------------------------------------------------------------ dates
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

  // ------------------------------------------------------------ one headline figure
  // Fills #<id> (the number alone), #<id>-unit, #<id>-range and #<id>-heard.
  //   f: {value, low, high, heard, estimated}; kind: count | rate | dwell;
  //   heardUnit: what the heard count counts (e.g. "devices"); note: replaces "estimated", or
  //   says which part is not estimated yet.
  function figure(id, kind, f, heardUnit, note) {
    const valueEl = $(id), unitEl = $(id + "-unit"), rangeEl = $(id + "-range"), heardEl = $(id + "-heard");
    const card = valueEl.closest(".kpi");
    if (f.estimated) {
      valueEl.textContent = valueText(kind, f.value);
      if (unitEl) unitEl.textContent = kind === "count" ? plural(f.value, " person", " people") : "";
      const r = rangeText(kind, f.low, f.high);
      if (rangeEl) {
        rangeEl.textContent = (note || "estimated") + (r ? ` · 90 % range ${r}` : "");
        rangeEl.classList.remove("pending");
      }
      if (heardEl) {
        heardEl.textContent = f.heard == null ? "" :
          `heard: ${valueText(kind, f.heard)}` + (kind === "count" ? " " + heardUnit : "");
      }
    } else {
      // No estimate: the heard count, said to be one.
      const heard = f.heard != null ? f.heard : f.value;
      valueEl.textContent = valueText(kind, heard);
      if (unitEl) unitEl.textContent = kind === "count" ? " heard" : "";
      if (rangeEl) {
        rangeEl.textContent = "not estimated yet" + (note ? ` (${note})` : "") + ": " +
          (kind === "count" ? `${heardUnit} heard, not people` : "from devices heard");
        rangeEl.classList.add("pending");
      }
      if (heardEl) heardEl.textContent = "";
    }
    if (card) card.classList.toggle("not-estimated", !f.estimated);
  }

  // Inline figure (a sub-line): "21.6 %" + "(10.9–39.6 %)" + "heard 49.8 %".
  function inlineFigure(id, kind, f) {
    const heard = f.heard != null ? f.heard : f.value;
    $(id).textContent = valueText(kind, f.estimated ? f.value : heard);
    const r = f.estimated ? rangeText(kind, f.low, f.high) : "";
    $(id + "-range").textContent = f.estimated ? (r ? `(${r})` : "") : "heard, not estimated yet";
    $(id + "-heard").textContent = f.estimated && f.heard != null ? `· heard ${valueText(kind, f.heard)}` : "";
  }

  // How many days of the range have estimates (from /api/method), when known.
  function coverage(me, start, end) {
    if (!me || !me.days) return null;
    const n = spanDays(start, end);
    const k = Object.keys(me.days).filter((d) => d >= start && d <= end).length;
    return {est: k, days: n, missing: k > 0 && k < n ? `${n - k} of ${n} days` : "",
      only: k > 0 && k < n ? `estimated on ${k} of ${n} days only` : ""};
  }

  const pick = (o, name) => ({
    value: o[name], low: o[name + "_low"], high: o[name + "_high"], heard: o[name + "_heard"], estimated: !!o.estimated,
  });

  // ------------------------------------------------------------ drawing
  function change(el, rel, suffix, note) {
    el.classList.remove("up", "down");
    if (rel == null) {
      el.textContent = "no comparison yet";
      return;
    }
    el.classList.add(rel >= 0 ? "up" : "down");
    el.textContent = (rel >= 0 ? "▲ +" : "▼ ") + suffix(rel) + " vs same weekday last week" + (note || "");
  }

  // The line under "Now in store" says how the figure shown was made, which depends on its source.
  let nowSource = null;
  let explainTexts = {};
  function explainNow() {
    const e = explainTexts;
    $("explain-now").textContent = nowSource === "presence_calibrated" ? (e.now || "")
      : nowSource === "occupancy" ? (e.occupancy || "") : (e.heard || "");
  }

  function drawNow(now) {
    nowSource = now.source;
    explainNow();
    const live = now.zones.length ? Math.max(...now.zones.map((z) => z.inside)) : null;
    if (now.source === "occupancy" || now.source === "presence_calibrated") {
      figure("now-in-store", "count", {
        value: now.now_in_store, low: now.now_in_store_low, high: now.now_in_store_high, heard: live, estimated: true,
      }, "devices live");
      $("now-asof").textContent = asOfText(now.as_of_estimate != null ? now.as_of_estimate : now.as_of) + " (store time)";
    } else {
      figure("now-in-store", "count", {value: now.now_in_store, estimated: false}, "devices");
      $("now-in-store-heard").textContent = now.source === "presence"
        ? `live from ${now.zones.length} sensor${now.zones.length === 1 ? "" : "s"}`
        : `visits ended in the last ${Math.round(now.window_s / 60)} min`;
      $("now-asof").textContent = asOfText(now.as_of) + " (store time)";
    }
  }

  // today's compare block covers whole hours before the current one (when estimated).
  function drawCompare(cmp, watermark) {
    const t = cmp.today, lw = cmp.last_week_same_time;
    figure("today-visitors", "count", pick(t, "visitors"), "devices");
    figure("today-capture", "rate", pick(t, "capture_rate"));
    if (t.estimated === lw.estimated) {
      change($("today-vs"), cmp.change.visitors, (v) => (v * 100).toFixed(0) + " %");
      change($("capture-vs"), cmp.change.capture_rate_points, (v) => (v * 100).toFixed(1) + " pts");
      $("compare-note").textContent = t.estimated ? "(estimated people)" : "(heard, not estimated yet)";
    } else {
      // An estimate against a heard count is no comparison: compare what was heard on both days.
      const a = t.visitors_heard, b = lw.visitors_heard;
      change($("today-vs"), a == null || !b ? null : (a - b) / b, (v) => (v * 100).toFixed(0) + " %", " (heard)");
      const ca = t.capture_rate_heard, cb = lw.capture_rate_heard;
      change($("capture-vs"), ca == null || cb == null ? null : ca - cb, (v) => (v * 100).toFixed(1) + " pts", " (heard)");
      $("compare-note").textContent = t.estimated ? "(last week: heard, not estimated)" : "(today: heard, not estimated yet)";
    }
    if (t.estimated) {
      const mm = Number(cmp.local_time.split(":")[1]);
      const hourStart = Math.floor(cmp.as_of / 60) * 60 - mm * 60;
      $("today-asof").textContent = asOfText(Math.min(hourStart, watermark == null ? hourStart : watermark)) + " (store time)";
    } else {
      $("today-asof").textContent = "";
    }
    const rounded = (v) => Math.round(v).toLocaleString();
    charts.bars($("chart-compare"), {
      labels: cmp.hourly.map((h) => String(h.hour).padStart(2, "0")),
      series: [
        {name: "Today", values: cmp.hourly.map((h) => h.today), cls: "visitors"},
        {name: "Last week", values: cmp.hourly.map((h) => h.last_week), cls: "lastweek"},
      ],
      labelEvery: 3,
      height: 200,
      fmt: rounded,
    });
  }

  // A link run that lowered a count already shown says so, with when (docs/metrics.md, "Live
  // figures"): a figure that quietly steps back is one a manager stops trusting.
  function revised(id, revisions, name, severalDays) {
    const mine = (revisions || []).filter((r) => r.figure === name);
    if (!mine.length) {
      $(id).textContent = "";
      return;
    }
    const r = mine[mine.length - 1];
    const pct = r.from ? ((r.to - r.from) / r.from) * 100 : 0;
    const when = asOfText(r.at).replace(/^as of /, "at ") + (severalDays ? ` (${r.day})` : "");
    $(id).textContent = `Revised ${when} by a later run: ${Math.round(r.from).toLocaleString()} → ` +
      `${Math.round(r.to).toLocaleString()} (${pct.toFixed(1)} %)` +
      (mine.length > 1 ? `; ${mine.length} revisions in all` : "");
  }

  function drawFootfall(ff, today, cov) {
    const t = ff.totals;
    let visitors = pick(t, "visitors"), passersby = pick(t, "passersby"), capture = pick(t, "capture_rate");
    if (!t.estimated) {
      // Not every period is estimated: the heard counts of the whole range, from the series
      // (an estimated period carries its heard count, the others are heard counts).
      const sum = (k) => ff.series.reduce((a, p) => a + (p[k + "_heard"] != null ? p[k + "_heard"] : p[k] || 0), 0);
      const v = sum("visitors"), p = sum("passersby");
      visitors = {value: v, heard: v, estimated: false};
      passersby = {value: p, heard: p, estimated: false};
      capture = {value: v + p ? v / (v + p) : null, heard: v + p ? v / (v + p) : null, estimated: false};
    }
    const missing = cov && !t.estimated ? cov.missing : "";
    figure("range-visitors", "count", visitors, "devices", missing);
    figure("range-passersby", "count", passersby, "devices", missing);
    inlineFigure("range-capture", "rate", capture);
    // Revisions are of estimates: beside heard counts they would compare unlike figures.
    const revisions = t.estimated ? t.revisions : [];
    revised("range-visitors-revised", revisions, "visitors", ff.start !== ff.end);
    revised("range-passersby-revised", revisions, "passersby", ff.start !== ff.end);
    // Provisional: the estimates stop short of the range's end (today: the last minutes).
    const endsAt = dayEnd(ff.end);
    $("range-asof").textContent = t.estimated && t.as_of != null && t.as_of < endsAt && ff.end >= today
      ? asOfText(t.as_of) + " (store time); later visits not estimated yet" : "";
    if (ff.explain) {
      $("explain-visitors").textContent = ff.explain.visitors || "";
      $("explain-passersby").textContent = ff.explain.passersby || "";
      $("explain-capture").textContent = ff.explain.capture_rate || "";
      $("explain-heard").textContent = ff.explain.heard || "";
      explainTexts = ff.explain;
      explainNow();
    }

    $("footfall-gran").textContent = "by " + ff.granularity;
    const label = (p) => (ff.granularity === "hour" ? p.slice(11, 13) + (ff.start === ff.end ? "" : " " + p.slice(5, 10))
      : p.slice(5, 10));
    let series = ff.series;
    if (ff.granularity === "hour" && ff.start === ff.end) {
      // Trading hours only: drop the empty night, keep at least 8:00-20:00.
      const busy = series.map((s, i) => (s.visitors + s.passersby > 0 || (i >= 8 && i <= 20) ? i : -1)).filter((i) => i >= 0);
      series = series.slice(Math.min(...busy), Math.max(...busy) + 1);
    }
    const heardOnly = series.filter((s) => !s.estimated && s.visitors + s.passersby > 0).length;
    const estimated = series.filter((s) => s.estimated).length;
    $("footfall-legend-note").textContent = !estimated ? "· devices heard, not estimated yet"
      : heardOnly ? "· estimated people; pale bars: heard, not estimated yet" : "· estimated people";
    const tip = (s, name, key) => {
      const head = `${label(s.period)} · ${name}: `;
      if (!s.estimated) return head + `${num(s[key])} heard (not estimated yet)`;
      const r = rangeText("count", s[key + "_low"], s[key + "_high"]);
      return head + `${num(s[key])} people` + (r ? ` (${r})` : "") + (s[key + "_heard"] != null ? `, heard ${num(s[key + "_heard"])}` : "");
    };
    const classes = series.map((s) => (s.estimated ? "" : "heard-only"));
    charts.bars($("chart-footfall"), {
      labels: series.map((s) => label(s.period)),
      series: [
        {name: "Visitors", values: series.map((s) => s.visitors), cls: "visitors", classes,
          titles: series.map((s) => tip(s, "Visitors", "visitors"))},
        {name: "Passers-by", values: series.map((s) => s.passersby), cls: "passersby", classes,
          titles: series.map((s) => tip(s, "Passers-by", "passersby"))},
      ],
      stacked: true,
      // A rate of 1 visitor out of 1 says nothing: leave thin hours off the line.
      line: {name: "Capture rate", values: series.map((s) => (s.visitors + s.passersby >= 10 ? s.capture_rate : null)), cls: "capture", max: 1,
        fmt: (v) => (v * 100).toFixed(1) + " %", axisFmt: (v) => Math.round(v * 100) + "%"},
      height: 250,
    });
  }

  function drawZones(ff, now) {
    const inside = Object.fromEntries(now.zones.map((z) => [z.zone, z.inside]));
    const rows = ff.zones.map((z) => {
      const tr = document.createElement("tr");
      tr.dataset.zone = z.zone;
      cell(tr, z.zone, null, "Zone");
      cell(tr, num(z.visitors_heard != null ? z.visitors_heard : z.visitors), "num", "Visitors heard");
      cell(tr, num(z.passersby_heard != null ? z.passersby_heard : z.passersby), "num", "Passers-by heard");
      cell(tr, pct(z.capture_rate_heard != null ? z.capture_rate_heard : z.capture_rate), "num", "Capture heard");
      cell(tr, z.zone in inside ? num(inside[z.zone]) : "–", "num", "Heard now");
      return tr;
    });
    $("zones").replaceChildren(...(rows.length ? rows : [emptyRow(5, "No zone heard anything in this range.")]));
  }

  function drawEngagement(en, cov) {
    // Not every day estimated: the dwell figures are the heard ones, but the API's histogram
    // holds the estimated days' people.
    const partial = !en.estimated && ((cov && cov.est > 0) || en.mean_dwell_s_low != null);
    figure("median-dwell", "dwell", pick(en, "median_dwell_s"), null, partial && cov ? cov.missing : "");
    inlineFigure("mean-dwell", "dwell", pick(en, "mean_dwell_s"));
    $("explain-dwell").textContent = en.explain || "";
    $("dwell-caveat").textContent = en.dwell_caveat || "";
    $("dwell-note").textContent = en.estimated ? "Estimated people by time spent inside"
      : partial ? "Estimated people by time spent inside, on the estimated days only" + (cov ? ` (${cov.est} of ${cov.days})` : "")
        : "Visits heard by time spent inside (not estimated yet)";
    const name = en.estimated || partial ? "People" : "Visits heard";
    charts.bars($("chart-dwell"), {
      labels: en.buckets.map((b) => b.bucket),
      series: [{name, values: en.buckets.map((b) => b.visits), cls: "visitors",
        titles: en.buckets.map((b) => `${b.bucket} · ${name}: ${num(b.visits)}` + (b.share == null ? "" : ` (${pct(b.share)})`))}],
      labelEvery: 1,
      height: 200,
    });
  }

  function drawLoyalty(lo, cov) {
    const f = pick(lo, "return_rate");
    const followed = f.heard; // phones followed across days (a count, not a rate)
    // Not every day estimated: the API's figures are the estimated days' (a rate stays a fair
    // estimate of the range; the counts cover those days only).
    const partial = !lo.estimated && lo.return_rate_low != null;
    const only = partial ? (cov && cov.only) || "estimated on some days only" : "";
    figure("return-rate", "rate", {...f, heard: null, estimated: lo.estimated || partial}, null, only);
    const byNetworks = lo.return_rate_networks ? ` (${num(lo.return_rate_networks)} by the networks they ask for)` : "";
    $("return-rate-heard").textContent = (lo.estimated || partial) && followed != null
      ? `heard: measured on ${num(followed)} ${plural(followed, "phone", "phones")} followed across days${byNetworks}`
      : "";
    $("explain-return").textContent = lo.explain || "";
    const uniqueRange = rangeText("count", lo.unique_visitors_low, lo.unique_visitors_high);
    $("unique-visitors").textContent = num(lo.unique_visitors) + (uniqueRange ? ` (${uniqueRange})` : "");
    $("unique-visitors-label").textContent = lo.estimated ? "unique visitors (estimated people)"
      : partial ? "unique visitors on the estimated days" : "unique devices heard";
    $("new-visitors").textContent = num(lo.new_visitors);
    $("returning-visitors").textContent = num(lo.returning_visitors);
    $("loyalty-note").textContent = lo.estimated ? "estimated people" : partial ? `estimated people, ${only}`
      : "devices heard, not estimated yet";
    for (const fr of lo.frequency) $("freq-" + fr.frequency).textContent = pct(fr.share);
    $("median-gap").textContent = lo.median_days_since_last_visit == null ? "–" : lo.median_days_since_last_visit + " d";
    charts.donut($("chart-loyalty"), [
      {name: "New", value: lo.new_visitors, cls: "visitors"},
      {name: "Returning", value: lo.returning_visitors, cls: "returning"},
    ], pct(lo.return_rate));
  }

  function drawOccupancy(oc) {
    const card = $("occupancy-card");
    if (!oc || oc.error) {
      $("chart-occupancy").replaceChildren(Object.assign(document.createElement("p"), {
        className: "muted empty-chart",
        textContent: oc && oc.error ? oc.error
          : `People in store is shown for ranges of up to ${OCCUPANCY_MAX_DAYS} days: pick a shorter range.`,
      }));
      $("occupancy-meta").textContent = "";
      card.dataset.points = "0";
      return;
    }
    if (oc.explain) $("explain-occupancy").textContent = oc.explain;
    const single = oc.start === oc.end;
    if (!oc.series.some((p) => p.people != null)) {
      $("chart-occupancy").replaceChildren(Object.assign(document.createElement("p"), {
        className: "muted empty-chart",
        textContent: "Not estimated yet: no estimate of the people in store for this range so far.",
      }));
      $("occupancy-meta").textContent = `every ${Math.round(oc.window_s / 60)} min · not estimated yet`;
      card.dataset.points = "0";
      return;
    }
    // Windows that have begun by the store's clock; the rest are the future, not "missing".
    let pts = oc.series.filter((p) => store.now == null || p.start <= store.now);
    if (single) {
      // Trading hours only: from the first to the last window with people, at least 8:00-20:00.
      const hourOf = (p) => Number(p.time.slice(11, 13));
      const busy = pts.map((p, i) => ((p.people || 0) > 0.05 || (hourOf(p) >= 8 && hourOf(p) < 20) || (p.people == null && p.start > store.now - 7200) ? i : -1))
        .filter((i) => i >= 0);
      if (busy.length) pts = pts.slice(Math.max(0, Math.min(...busy) - 1), Math.max(...busy) + 2);
    }
    const ticks = [];
    pts.forEach((p, i) => {
      const hm = p.time.slice(11, 16);
      if (single ? hm.endsWith(":00") : hm === "00:00") ticks.push({i, text: single ? hm.slice(0, 2) + "h" : p.time.slice(5, 10)});
    });
    const peak = pts.reduce((a, p) => (p.people != null && p.people > a.people ? p : a), {people: -1});
    const pending = pts.filter((p) => p.people == null);
    const tail = pending.length && pts[pts.length - 1].people == null;
    let firstTail = pts.length - 1;
    while (tail && firstTail > 0 && pts[firstTail - 1].people == null) firstTail--;
    $("occupancy-meta").textContent = `every ${Math.round(oc.window_s / 60)} min` +
      (peak.people >= 0 ? ` · peak ${num(peak.people)} ${plural(peak.people, "person", "people")} at ${single ? peak.time.slice(11) : peak.time}` : "") +
      (!pending.length ? "" : tail && pending.length === pts.length - firstTail
        ? ` · not estimated yet from ${single ? pts[firstTail].time.slice(11) : pts[firstTail].time}`
        : " · shaded: not estimated yet");
    charts.line($("chart-occupancy"), {
      values: pts.map((p) => p.people),
      labels: pts.map((p) => (single ? p.time.slice(11) : p.time)),
      ticks,
      cls: "people",
      height: 200,
      fmt: (v) => `${num(v)} ${plural(v, "person", "people")} (estimated)`,
      pendingTitle: "not estimated yet",
    });
    card.dataset.points = String(pts.filter((p) => p.people != null).length);
  }

  function drawMethod(me, ff) {
    const explain = (me && me.explain) || (ff && ff.explain) || {};
    const names = {
      visitors: "Visitors", passersby: "Passers-by", capture_rate: "Capture rate", dwell: "Dwell",
      return_rate: "Returning", occupancy: "People in store", heard: "Heard",
    };
    $("method-explain").replaceChildren(...Object.entries(explain).map(([k, text]) => {
      const li = document.createElement("li");
      const b = document.createElement("b");
      b.textContent = (names[k] || k) + ": ";
      li.append(b, text);
      return li;
    }));
    if (!me) {
      $("method-model").textContent = "";
      return;
    }
    const days = Object.keys(me.days || {}).sort();
    const parts = [];
    if (days.length) {
      const last = days[days.length - 1];
      const notes = Object.entries(me.days[last] || {})
        .filter(([, v]) => v != null && typeof v !== "object")
        .map(([k, v]) => `${k.replace(/_s$/, " (s)").replace(/_/g, " ")} ${typeof v === "number" ? Math.round(v * 10) / 10 : v}`);
      parts.push(`${days.length} day${days.length === 1 ? "" : "s"} of the range estimated; model of ${last}: ${notes.join(" · ")}.`);
    } else {
      parts.push("No day of the range is estimated yet: the figures are heard counts.");
    }
    const cal = me.calibration || {};
    parts.push(`Calibration against a real count: ${cal.source || "none"}` +
      (cal.visitors != null && cal.visitors !== 1 ? ` (visitors × ${cal.visitors.toFixed(2)}, passers-by × ${Number(cal.passersby).toFixed(2)})` : "") + ".");
    $("method-model").textContent = parts.join(" ");
  }

  function ago(s) {
    if (s == null) return "never";
    if (s < 0) return "just now";
    if (s < 90) return Math.round(s) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }

  function drawSensors(se, rj) {
    const heads = ["Sensor", "Status", "Last heard", "Msg/s", "Backlog"];
    const rows = se.sensors.map((s) => {
      const tr = document.createElement("tr");
      tr.dataset.sensor = s.sensor;
      tr.dataset.status = s.status;
      // A replayed sensor's "last heard" is when the replay reached the hub, not a live signal.
      const heard = s.status === "replayed" ? "replay" : ago(s.last_message_age_s);
      const cells = [s.sensor, s.status, heard, s.message_rate == null || s.status === "replayed" ? "–" : s.message_rate.toFixed(1),
        s.backlog == null ? "–" : num(s.backlog)];
      cells.forEach((c, i) => {
        const td = document.createElement("td");
        td.dataset.label = heads[i];
        if (i >= 3) td.className = "num";
        if (i === 1) {
          const box = document.createElement("span");
          const dot = document.createElement("span");
          dot.className = "dot " + s.status;
          box.append(dot, " " + c);
          td.appendChild(box);
        } else td.textContent = c;
        tr.appendChild(td);
      });
      return tr;
    });
    if (!rows.length) rows.push(emptyRow(5, "No sensor has reported yet."));
    $("sensors").replaceChildren(...rows);
    const replayed = se.sensors.filter((s) => s.status === "replayed").length;
    $("sensors-note").hidden = !replayed;
    $("sensors-note").textContent = replayed
      ? `Replayed: ${replayed === se.sensors.length ? "these sensors'" : "a replayed sensor's"} data is a recorded ` +
        "capture played back once (a demo), not a live sensor; nothing new will arrive from it."
      : "";
    $("rejects").textContent = rj.total ? `${num(rj.total)} malformed or unknown messages rejected (` +
      rj.reasons.map((r) => `${r.reason}: ${num(r.count)}`).join(", ") + ")" : "No rejected messages.";
  }

  function cell(tr, content, cls, label) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    if (label) td.dataset.label = label;
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
    const title = history.map((h) => `${storeText(h.ts)}: ${num(h.members)}`).join("\n");
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
      cell(tr, name, "name");
      cell(tr, num(s.size), "num size", "Members");
      cell(tr, trend(s.history), null, "Trend");
      const p = s.profile;
      cell(tr, p ? p.median_dwell_min.toFixed(1) + " min" : "–", "num", "Median dwell");
      cell(tr, p ? pct(p.visitor_share) : "–", "num", "Came in");
      cell(tr, p ? p.typical_time : "–", "num", "Typical time");
      return tr;
    });
    $("segments").replaceChildren(...(rows.length ? rows : [emptyRow(6, "No segments yet.")]));

    const max = Math.max(1, ...cl.clusters.map((c) => c.size));
    const crows = cl.clusters.map((c) => {
      const tr = document.createElement("tr");
      tr.dataset.cluster = c.label;
      cell(tr, c.label, "name");
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
      cell(tr, size, null, "Devices");
      const p = c.profile;
      cell(tr, p ? p.median_dwell_min.toFixed(1) + " min" : "–", "num", "Median dwell");
      cell(tr, p ? p.typical_time : "–", "num", "Typical time");
      cell(tr, p ? p.visit_days.toFixed(1) : "–", "num", "Visit days");
      return tr;
    });
    $("clusters").replaceChildren(...(crows.length ? crows : [emptyRow(5, "No clusters yet.")]));
    $("clusters-meta").textContent = cl.k
      ? `k = ${cl.k}` + (cl.silhouette == null ? "" : `, silhouette ${cl.silhouette.toFixed(2)}`) +
        ` · ${num(cl.devices)} devices · ${storeText(cl.as_of)}`
      : "";
  }

  function csvLinks(q, gran) {
    $("csv-footfall").href = `/api/footfall?${q}&granularity=${gran}&format=csv`;
    $("csv-engagement").href = `/api/engagement?${q}&format=csv`;
    $("csv-loyalty").href = `/api/loyalty?${q}&format=csv`;
    $("csv-occupancy").href = `/api/occupancy?${q}&window=${OCCUPANCY_WINDOW_S}&format=csv`;
    $("csv-compare").href = "/api/compare?format=csv";
    $("csv-sensors").href = "/api/sensors?format=csv";
  }

  // The page-level note: up to when today's estimates reach.
  function drawReading(now, ff, today) {
    let wm = null;
    if (now.source === "occupancy" && now.as_of_estimate != null) wm = now.as_of_estimate;
    else if (ff.end >= today && ff.totals.estimated && ff.totals.as_of != null) wm = ff.totals.as_of;
    $("estimates-asof").textContent = wm == null
      ? "Today is not estimated yet: today's figures are heard counts."
      : `Today's estimates ${asOfText(wm)} (store time); the last minutes are provisional, not estimated yet.`;
    return wm;
  }

  async function refresh() {
    clearTimeout(timer);
    const {start, end} = range();
    const q = `start=${encodeURIComponent(start)}&end=${encodeURIComponent(end)}`;
    const gran = granularity(start, end);
    document.querySelectorAll(".range-label").forEach((e) => (e.textContent = start === end ? start : `${start} – ${end}`));
    csvLinks(q, gran);
    // Extras must not take the dashboard down with them.
    const optional = (p) => p.catch((e) => ({error: e.message}));
    const occupancy = spanDays(start, end) <= OCCUPANCY_MAX_DAYS
      ? optional(api(`/api/occupancy?${q}&window=${OCCUPANCY_WINDOW_S}`)) : Promise.resolve(null);
    try {
      const [now, cmp, ff, en, lo, se, rj, sg, cl, oc, me] = await Promise.all([
        api("/api/now"), api("/api/compare"), api(`/api/footfall?${q}&granularity=${gran}`),
        api(`/api/engagement?${q}`), api(`/api/loyalty?${q}`), api("/api/sensors"), api("/api/rejects"),
        api("/api/segments"), api("/api/clusters"), occupancy, optional(api(`/api/method?${q}`)),
      ]);
      learnStoreClock(cmp);
      const wm = drawReading(now, ff, cmp.today.date);
      drawNow(now);
      drawCompare(cmp, wm);
      const cov = coverage(me && !me.error ? me : null, start, end);
      drawFootfall(ff, cmp.today.date, cov);
      drawZones(ff, now);
      drawEngagement(en, cov);
      drawLoyalty(lo, cov);
      drawOccupancy(oc);
      drawMethod(me && !me.error ? me : null, ff);
      drawSensors(se, rj);
      drawSegments(sg, cl);
      $("error").hidden = true;
      // The hub's clock in store time, not the browser's: one clock on the whole page.
      $("updated").textContent = "updated " + storeText(cmp.as_of);
      $("store-tz").textContent = store.tz ? `store time: ${store.tz}` : "store time";
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
    learnStoreClock(cmp);
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
    let lastWidth = window.innerWidth;
    window.addEventListener("resize", () => {
      // Charts are drawn to the width: redraw when it changes (not when a phone's toolbar hides).
      if (window.innerWidth === lastWidth) return;
      lastWidth = window.innerWidth;
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
