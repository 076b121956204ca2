
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const cards = JSON.parse(document.getElementById("cards-data").textContent);
  const table = document.getElementById("leaderboard");
  const tbody = table.tBodies[0];
  const headers = Array.from(table.tHead.rows[0].cells);

  // ---- sorting: numbers numerically, text alphabetically, n/a (empty data-value) last in both directions
  function value(row, index, numeric) {
    const v = row.cells[index].getAttribute("data-value");
    if (v === null || v === "") return null;
    return numeric ? Number(v) : v;
  }

  function sortBy(key, dir) {
    const index = headers.findIndex((th) => th.dataset.key === key);
    if (index < 0 || (dir !== "asc" && dir !== "desc")) return;
    const numeric = headers[index].dataset.type === "number";
    const sign = dir === "asc" ? 1 : -1;
    const rows = Array.from(tbody.rows);
    rows.sort((a, b) => {
      const x = value(a, index, numeric);
      const y = value(b, index, numeric);
      if (x === null || y === null) return (x === null) - (y === null);
      return sign * (numeric ? x - y : x.localeCompare(y));
    });
    rows.forEach((row) => tbody.appendChild(row));
    headers.forEach((th, i) => {
      th.setAttribute("aria-sort", i !== index ? "none" : dir === "asc" ? "ascending" : "descending");
    });
  }

  function sortFromHash() {
    const match = /^#sort=([a-z0-9_]+)-(asc|desc)$/.exec(window.location.hash);
    if (match) sortBy(match[1], match[2]);
  }

  headers.forEach((th) => {
    th.querySelector("button").addEventListener("click", () => {
      const state = th.getAttribute("aria-sort");
      const first = th.dataset.type === "number" ? "desc" : "asc";
      const dir = state === "ascending" ? "desc" : state === "descending" ? "asc" : first;
      sortBy(th.dataset.key, dir);
      try {
        window.history.replaceState(null, "", "#sort=" + th.dataset.key + "-" + dir);
      } catch (e) {
        // a sandboxed frame may refuse to change the address; the table is sorted all the same
      }
    });
  });
  window.addEventListener("hashchange", sortFromHash);
  sortFromHash();

  // ---- plots
  const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#000000", "#999999"];
  const SHAPES = ["circle", "square", "triangle", "diamond"];
  const schemes = Array.from(new Set(cards.map((c) => c.scheme))).sort();
  const datasets = Array.from(new Set(cards.map((c) => c.dataset))).sort();
  const colour = (scheme) => PALETTE[schemes.indexOf(scheme) % PALETTE.length];
  const shape = (dataset) => SHAPES[datasets.indexOf(dataset) % SHAPES.length];

  function node(name, attrs, parent) {
    const element = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) element.setAttribute(k, String(v));
    if (parent) parent.appendChild(element);
    return element;
  }

  function symbol(kind, x, y, r) {
    if (kind === "bar") return `M${x - 1.4 * r},${y - 0.6 * r}h${2.8 * r}v${1.2 * r}h${-2.8 * r}Z`;
    if (kind === "square") return `M${x - r},${y - r}h${2 * r}v${2 * r}h${-2 * r}Z`;
    if (kind === "triangle") return `M${x},${y - 1.2 * r}L${x + 1.1 * r},${y + 0.8 * r}L${x - 1.1 * r},${y + 0.8 * r}Z`;
    if (kind === "diamond") return `M${x},${y - 1.3 * r}L${x + 1.3 * r},${y}L${x},${y + 1.3 * r}L${x - 1.3 * r},${y}Z`;
    return `M${x - r},${y}a${r},${r} 0 1,0 ${2 * r},0a${r},${r} 0 1,0 ${-2 * r},0Z`;
  }

  function linearTicks(lo, hi) {
    const raw = (hi - lo) / 5;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
    return ticks;
  }

  function logTicks(lo, hi) {
    const ticks = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      for (const m of [1, 2, 5]) {
        const t = m * Math.pow(10, e);
        if (t >= lo && t <= hi) ticks.push(Number(t.toPrecision(12)));
      }
    }
    return ticks;
  }

  function pointTitle(c) {
    return [
      c.name,
      `${c.scheme}, ${c.dataset}`,
      `top-1 ${c.top1.toFixed(2)}% (${c.source_text})`,
      `packed ${c.packed_mb === null ? "n/a" : c.packed_mb.toFixed(3) + " MB"}`,
      `CPU latency: ${c.latency_text}`,
    ].join("\n");
  }

  function scatter(id, key, label, logX) {
    const svg = document.getElementById(id);
    const W = 640, H = 400, left = 64, right = 24, top = 16, bottom = 56;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const shown = cards.filter((c) => c.top1 !== null && c[key] !== null && (!logX || c[key] > 0));
    const missing = cards.filter((c) => !shown.includes(c)).map((c) => c.name);
    const what = label.split(/[,(]/)[0].trim();
    document.getElementById(id + "-missing").textContent = !shown.length
      ? `No card has both a top-1 and a ${what} yet.`
      : missing.length ? `Not plotted (no top-1 or no ${what}): ${missing.join(", ")}` : "";
    const xs = shown.map((c) => c[key]);
    const ys = shown.map((c) => c.top1);
    const x0 = logX ? (xs.length ? Math.min(...xs) / 1.6 : 1) : 0;
    const x1 = xs.length ? (logX ? Math.max(...xs) * 1.6 : Math.max(...xs) * 1.15 || 1) : 10;
    const y0 = ys.length ? Math.max(0, Math.floor((Math.min(...ys) - 5) / 10) * 10) : 0;
    const y1 = ys.length ? Math.min(100, Math.ceil((Math.max(...ys) + 5) / 10) * 10) : 100;
    const scale = logX ? Math.log10 : (v) => v;
    const fx = (v) => left + ((scale(v) - scale(x0)) / (scale(x1) - scale(x0))) * (W - left - right);
    const fy = (v) => H - bottom - ((v - y0) / (y1 - y0)) * (H - top - bottom);

    const grid = node("g", { class: "grid" }, svg);
    const axes = node("g", { class: "axes" }, svg);
    node("line", { x1: left, y1: H - bottom, x2: W - right, y2: H - bottom }, axes);
    node("line", { x1: left, y1: top, x2: left, y2: H - bottom }, axes);
    for (const t of logX ? logTicks(x0, x1) : linearTicks(x0, x1)) {
      node("line", { x1: fx(t), y1: top, x2: fx(t), y2: H - bottom }, grid);
      node("line", { x1: fx(t), y1: H - bottom, x2: fx(t), y2: H - bottom + 5 }, axes);
      node("text", { x: fx(t), y: H - bottom + 18, "text-anchor": "middle" }, axes).textContent = String(t);
    }
    for (const t of linearTicks(y0, y1)) {
      node("line", { x1: left, y1: fy(t), x2: W - right, y2: fy(t) }, grid);
      node("line", { x1: left - 5, y1: fy(t), x2: left, y2: fy(t) }, axes);
      node("text", { x: left - 8, y: fy(t) + 4, "text-anchor": "end" }, axes).textContent = String(t);
    }
    node("text", { class: "x-label", x: (left + W - right) / 2, y: H - 14, "text-anchor": "middle" }, axes)
      .textContent = label;
    node("text", {
      class: "y-label", x: -(top + H - bottom) / 2, y: 18, "text-anchor": "middle", transform: "rotate(-90)",
    }, axes).textContent = "top-1 accuracy (%)";

    const layer = node("g", { class: "points" }, svg);
    for (const c of shown) {
      const link = node("a", { href: c.href, class: "point", "data-name": c.name }, layer);
      node("title", {}, link).textContent = pointTitle(c);
      node("path", {
        d: symbol(shape(c.dataset), fx(c[key]), fy(c.top1), 6),
        fill: c.source === "paper" ? "#fff" : colour(c.scheme),
        stroke: colour(c.scheme),
        "stroke-width": 2,
      }, link);
    }
  }

  function legendItem(legend, kind, fill, stroke, text) {
    const item = document.createElement("span");
    const icon = node("svg", { width: 16, height: 16, viewBox: "0 0 16 16", "aria-hidden": "true" }, item);
    node("path", { d: symbol(kind, 8, 8, 5), fill: fill, stroke: stroke, "stroke-width": 2 }, icon);
    item.appendChild(document.createTextNode(text));
    legend.appendChild(item);
  }

  scatter("plot-size", "packed_mb", "packed size (MB, log scale)", true);
  scatter("plot-latency", "cpu_ms", "CPU latency, batch 1 (ms)", false);
  const legend = document.getElementById("legend");
  for (const s of schemes) legendItem(legend, "bar", colour(s), colour(s), `scheme ${s}`);
  for (const d of datasets) legendItem(legend, shape(d), "#888", "#888", `dataset ${d}`);
  legendItem(legend, "circle", "#888", "#888", "filled: top-1 measured here");
  legendItem(legend, "circle", "#fff", "#888", "hollow: top-1 reported in the paper, not reproduced here");
})();
