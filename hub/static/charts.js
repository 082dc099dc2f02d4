"use strict";
// Tiny hand-written SVG charts: bars (grouped or stacked) with an optional line on a second
// axis, a line over time with gaps (occupancy), a donut, and sparklines. No dependencies,
// nothing fetched from the internet.
(function () {
  const NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  // A top of the axis that splits into four round steps (0, 25, 50, 75, 100; 0, 2k, 4k...).
  function niceMax(v) {
    if (!(v > 0)) return 4;
    const step = v / 4;
    const p = Math.pow(10, Math.floor(Math.log10(step)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= step) return 4 * m * Math.max(p, 0.25);
    return 40 * p;
  }

  function fmt(n) {
    if (n >= 10000) return (n / 1000).toFixed(0) + "k";
    if (n >= 1000) return (n / 1000).toFixed(1) + "k";
    return String(Math.round(n));
  }

  // opts: {labels, series: [{name, values, cls, classes?, titles?}], stacked, line: {values, cls, max, fmt},
  // height, labelEvery, fmt}. classes[i] adds a class to one bar, titles[i] replaces its tooltip.
  function bars(container, opts) {
    const vfmt = opts.fmt || ((v) => v.toLocaleString());
    const width = Math.max(container.clientWidth || 600, 280);
    const height = opts.height || 220;
    const pad = {l: 44, r: opts.line ? 44 : 12, t: 10, b: 26};
    const w = width - pad.l - pad.r;
    const h = height - pad.t - pad.b;
    const n = opts.labels.length;
    const svg = el("svg", {viewBox: `0 0 ${width} ${height}`, width: "100%", height, class: "svg-chart"});
    let max = 0;
    for (let i = 0; i < n; i++) {
      if (opts.stacked) max = Math.max(max, opts.series.reduce((a, s) => a + (s.values[i] || 0), 0));
      else for (const s of opts.series) max = Math.max(max, s.values[i] || 0);
    }
    max = niceMax(max);
    for (let k = 0; k <= 4; k++) {
      const y = pad.t + h - (h * k) / 4;
      el("line", {x1: pad.l, x2: pad.l + w, y1: y, y2: y, class: "grid"}, svg);
      el("text", {x: pad.l - 6, y: y + 4, class: "axis", "text-anchor": "end"}, svg).textContent = fmt((max * k) / 4);
    }
    const slot = w / Math.max(n, 1);
    const groups = opts.stacked ? 1 : opts.series.length;
    const bw = Math.max(1, (slot * 0.8) / groups);
    const every = opts.labelEvery || Math.ceil(n / Math.max(1, Math.floor(w / 42)));
    for (let i = 0; i < n; i++) {
      let base = 0;
      opts.series.forEach((s, j) => {
        const v = s.values[i] || 0;
        const bh = (h * v) / max;
        const x = pad.l + slot * i + slot * 0.1 + (opts.stacked ? 0 : j * bw);
        const y = pad.t + h - bh - (opts.stacked ? (h * base) / max : 0);
        const cls = s.cls + (s.classes && s.classes[i] ? " " + s.classes[i] : "");
        const r = el("rect", {x, y, width: opts.stacked ? slot * 0.8 : bw, height: Math.max(0, bh), class: cls}, svg);
        el("title", {}, r).textContent = (s.titles && s.titles[i]) || `${opts.labels[i]} · ${s.name}: ${vfmt(v)}`;
        base += v;
      });
      if (i % every === 0) {
        el("text", {x: pad.l + slot * (i + 0.5), y: height - 8, class: "axis", "text-anchor": "middle"}, svg)
          .textContent = opts.labels[i];
      }
    }
    if (opts.line) {
      const lmax = opts.line.max || niceMax(Math.max(...opts.line.values.filter((v) => v != null), 0));
      let d = "";
      opts.line.values.forEach((v, i) => {
        if (v == null) return;
        const x = pad.l + slot * (i + 0.5);
        const y = pad.t + h - (h * v) / lmax;
        d += (d ? " L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
        const dot = el("circle", {cx: x, cy: y, r: 2.5, class: opts.line.cls}, svg);
        el("title", {}, dot).textContent = `${opts.labels[i]} · ${opts.line.name}: ${opts.line.fmt(v)}`;
      });
      if (d) el("path", {d, class: opts.line.cls + " line"}, svg);
      for (let k = 0; k <= 4; k++) {
        const y = pad.t + h - (h * k) / 4;
        el("text", {x: pad.l + w + 6, y: y + 4, class: "axis"}, svg).textContent = (opts.line.axisFmt || opts.line.fmt)((lmax * k) / 4);
      }
    }
    container.replaceChildren(svg);
  }

  // A line over time with gaps: null values are windows without data, drawn as a shaded band.
  // opts: {values: [number|null], labels: [tooltip label], ticks: [{i, text}], height, cls,
  // fmt (value -> text), pendingTitle}
  function line(container, opts) {
    const width = Math.max(container.clientWidth || 600, 240);
    const height = opts.height || 200;
    const pad = {l: 36, r: 12, t: 10, b: 26};
    const w = width - pad.l - pad.r;
    const h = height - pad.t - pad.b;
    const vals = opts.values;
    const n = vals.length;
    const fmtv = opts.fmt || ((v) => String(Math.round(v)));
    const svg = el("svg", {viewBox: `0 0 ${width} ${height}`, width: "100%", height, class: "svg-chart line-chart"});
    const max = niceMax(Math.max(0, ...vals.filter((v) => v != null)));
    for (let k = 0; k <= 4; k++) {
      const y = pad.t + h - (h * k) / 4;
      el("line", {x1: pad.l, x2: pad.l + w, y1: y, y2: y, class: "grid"}, svg);
      el("text", {x: pad.l - 6, y: y + 4, class: "axis", "text-anchor": "end"}, svg).textContent = fmt((max * k) / 4);
    }
    const step = w / Math.max(n, 1);
    const x = (i) => pad.l + step * (i + 0.5);
    const y = (v) => pad.t + h - (h * v) / max;
    // Runs of values and of gaps.
    let i = 0;
    let points = 0;
    while (i < n) {
      let j = i;
      if (vals[i] == null) {
        while (j + 1 < n && vals[j + 1] == null) j++;
        const band = el("rect", {x: pad.l + step * i, y: pad.t, width: step * (j - i + 1), height: h, class: "pending"}, svg);
        el("title", {}, band).textContent = `${opts.labels[i]}–${opts.labels[j]}: ${opts.pendingTitle || "no data"}`;
      } else {
        while (j + 1 < n && vals[j + 1] != null) j++;
        let d = "";
        for (let k = i; k <= j; k++) d += (k === i ? "M" : " L") + x(k).toFixed(1) + " " + y(vals[k]).toFixed(1);
        const base = (pad.t + h).toFixed(1);
        el("path", {d: `${d} L${x(j).toFixed(1)} ${base} L${x(i).toFixed(1)} ${base} Z`, class: opts.cls + " area"}, svg);
        el("path", {d, class: opts.cls + " line"}, svg);
        for (let k = i; k <= j; k++) {
          const dot = el("circle", {cx: x(k), cy: y(vals[k]), r: n > 300 ? 1 : 1.8, class: opts.cls + " point"}, svg);
          el("title", {}, dot).textContent = `${opts.labels[k]} · ${fmtv(vals[k])}`;
          points++;
        }
      }
      i = j + 1;
    }
    // Tick labels, thinned so they never overlap.
    const ticks = opts.ticks || [];
    const minGap = 40;
    let last = -Infinity;
    for (const t of ticks) {
      const tx = x(t.i);
      if (tx - last < minGap) continue;
      el("line", {x1: tx, x2: tx, y1: pad.t + h, y2: pad.t + h + 4, class: "grid"}, svg);
      el("text", {x: tx, y: height - 8, class: "axis", "text-anchor": "middle"}, svg).textContent = t.text;
      last = tx;
    }
    svg.dataset.points = String(points);
    container.replaceChildren(svg);
  }

  // parts: [{name, value, cls}]
  function donut(container, parts, centerText) {
    const size = 150, r = 60, stroke = 22, c = 2 * Math.PI * r;
    const svg = el("svg", {viewBox: `0 0 ${size} ${size}`, width: size, height: size, class: "svg-chart"});
    const total = parts.reduce((a, p) => a + p.value, 0);
    el("circle", {cx: size / 2, cy: size / 2, r, class: "donut-bg", "stroke-width": stroke, fill: "none"}, svg);
    let offset = 0;
    for (const p of parts) {
      if (!total || !p.value) continue;
      const len = (c * p.value) / total;
      const arc = el("circle", {
        cx: size / 2, cy: size / 2, r, fill: "none", class: p.cls + " arc", "stroke-width": stroke,
        "stroke-dasharray": `${len} ${c - len}`, "stroke-dashoffset": -offset,
        transform: `rotate(-90 ${size / 2} ${size / 2})`,
      }, svg);
      el("title", {}, arc).textContent = `${p.name}: ${Math.round(p.value).toLocaleString()}`;
      offset += len;
    }
    el("text", {x: size / 2, y: size / 2 + 7, "text-anchor": "middle", class: "donut-text"}, svg).textContent = centerText;
    container.replaceChildren(svg);
  }

  // A sparkline of values (oldest first), last point marked; title: tooltip text.
  function spark(container, values, title) {
    const width = 110, height = 26, pad = 3;
    const svg = el("svg", {viewBox: `0 0 ${width} ${height}`, width, height, class: "svg-chart spark"});
    if (title) el("title", {}, svg).textContent = title;
    if (values.length) {
      const lo = Math.min(...values), hi = Math.max(...values);
      const span = hi - lo || 1;
      const x = (i) => (values.length === 1 ? width - pad : pad + ((width - 2 * pad) * i) / (values.length - 1));
      const y = (v) => (hi === lo ? height / 2 : height - pad - ((height - 2 * pad) * (v - lo)) / span);
      const d = values.map((v, i) => (i ? "L" : "M") + x(i).toFixed(1) + " " + y(v).toFixed(1)).join(" ");
      el("path", {d, class: "spark-line"}, svg);
      el("circle", {cx: x(values.length - 1), cy: y(values[values.length - 1]), r: 2.5, class: "spark-dot"}, svg);
    }
    container.replaceChildren(svg);
  }

  window.FootfallCharts = {bars, line, donut, spark};
})();
