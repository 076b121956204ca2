"""``cards/index.html``: a static, self-contained leaderboard page generated from the cards' configs.

The page needs no server and loads nothing from elsewhere (it works from ``file://``): the table is rendered here,
each cell carrying its sort value in ``data-value``; two scatter plots (top-1 against packed size on a log axis,
top-1 against CPU latency) are drawn as inline SVG by the page's own script from the cards' figures, embedded as
JSON in a ``<script type="application/json">`` tag. Clicking a column header sorts the table (numbers numerically,
n/a last in either direction) and records the order in the address as ``#sort=<column>-<asc|desc>``, which the page
also applies when it loads, so a sorted view can be linked.

Everything taken from a config is escaped: HTML text and attributes with ``html.escape``, links with
``urllib.parse.quote``, and the embedded JSON with ``<``, ``>`` and ``&`` written as ``\\u003c`` & co, so no name can
close the script tag; the script itself only ever sets text with ``textContent`` and attributes.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any
from urllib.parse import quote

from .cards import ACCURACY_SOURCE_TEXT, PAPER_URL, REPORTED, card_name, card_row, latency_text, row_text

__all__ = ["COLUMNS", "leaderboard_html", "card_href"]

# (key, header, numeric): the table's columns, in order; the key is what #sort= names.
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("model", "model", False),
    ("architecture", "architecture", False),
    ("scheme", "scheme", False),
    ("dataset", "dataset", False),
    ("top1", "top-1", True),
    ("top5", "top-5", True),
    ("source", "accuracy", False),
    ("packed", "packed size", True),
    ("compression", "compression vs float", True),
    ("latency", "CPU latency (batch 1)", True),
    ("fit", "training time", True),
)


def card_href(name: str) -> str:
    """The relative link from ``index.html`` to a card's README.md (the folder name percent-encoded)."""
    return f"{quote(name, safe='')}/README.md"


def _num(value: float | None, scale: float = 1.0) -> float | None:
    return None if value is None else round(float(value) * scale, 6)


def _sort_values(row: dict[str, Any], text: dict[str, str]) -> dict[str, Any]:
    return {
        "model": row["name"],
        "architecture": row["architecture"],
        "scheme": row["scheme"],
        "dataset": row["dataset"],
        "top1": _num(row["top1"], 100),
        "top5": _num(row["top5"], 100),
        "source": text["source"] if row["accuracy_source"] else None,
        "packed": row["packed_bytes"],
        "compression": _num(row["compression"]),
        "latency": _num(row["cpu_ms"]),
        "fit": _num(row["fit_seconds"]),
    }


def _table_row(row: dict[str, Any]) -> str:
    text = row_text(row)
    values = _sort_values(row, text)
    shown = {
        "model": f'<a href="{escape(card_href(row["name"]))}">{escape(row["name"])}</a>',
        **{k: escape(str(row[k])) for k in ("architecture", "scheme", "dataset")},
        **{k: escape(text[k]) for k in ("top1", "top5", "source", "packed", "compression", "latency", "fit")},
    }
    cells = []
    for key, _, _ in COLUMNS:
        value = "" if values[key] is None else str(values[key])
        cells.append(f'<td class="{key}" data-value="{escape(value)}">{shown[key]}</td>')
    cls = ' class="reported"' if row["accuracy_source"] == REPORTED else ""
    return f"<tr{cls}>" + "".join(cells) + "</tr>"


def _plot_data(config: dict[str, Any]) -> dict[str, Any]:
    row = card_row(config)
    return {
        "name": row["name"],
        "href": card_href(row["name"]),
        "scheme": row["scheme"],
        "dataset": row["dataset"],
        "source": row["accuracy_source"],
        "source_text": ACCURACY_SOURCE_TEXT.get(row["accuracy_source"], "n/a"),
        "top1": _num(row["top1"], 100),
        "packed_mb": _num(row["packed_bytes"], 1e-6),
        "cpu_ms": _num(row["cpu_ms"]),
        "latency_text": latency_text(config.get("cpu_latency")),
    }


def _script_json(data: Any) -> str:
    """JSON that is safe inside a <script> element: no "<", ">" or "&" (so no "</script>" or "<!--")."""
    text = json.dumps(data, ensure_ascii=True, sort_keys=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def leaderboard_html(configs: list[dict[str, Any]]) -> str:
    """The whole page for ``configs``, rows in the index's order (dataset, then best top-1 first)."""
    rows = sorted((card_row(c) for c in configs), key=lambda r: (r["dataset"], -(r["top1"] or 0.0), r["name"]))
    head = "".join(
        f'<th data-key="{key}" data-type="{"number" if numeric else "text"}" aria-sort="none">'
        f'<button type="button">{escape(label)}</button></th>'
        for key, label, numeric in COLUMNS
    )
    body = "\n".join(_table_row(r) for r in rows)
    data = [_plot_data(c) for c in sorted(configs, key=card_name)]
    return _PAGE.format(
        count=len(rows),
        paper_url=escape(PAPER_URL),
        reported=escape(ACCURACY_SOURCE_TEXT[REPORTED]),
        head=head,
        body=body,
        data=_script_json(data),
        style=_STYLE,
        script=_SCRIPT,
    )


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.35rem 0.5rem; text-align: left; }
td.top1, td.top5, td.packed, td.compression, td.latency, td.fit {
  text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap;
}
th button { font: inherit; font-weight: 600; background: none; border: 0; padding: 0; cursor: pointer; }
th[aria-sort="ascending"] button::after { content: " \\25B2"; }
th[aria-sort="descending"] button::after { content: " \\25BC"; }
tr.reported td.top1, tr.reported td.top5, tr.reported td.source { font-style: italic; color: #555; }
.plots { display: flex; flex-wrap: wrap; gap: 1.5rem; }
.plots figure { margin: 0; flex: 1 1 30rem; }
svg.plot { width: 100%; height: auto; border: 1px solid #eee; }
svg.plot .axes line { stroke: #444; }
svg.plot .grid line { stroke: #eee; }
svg.plot text { font-size: 12px; fill: #333; }
#legend { display: flex; flex-wrap: wrap; gap: 0.5rem 1.5rem; margin: 1rem 0; font-size: 0.9rem; }
#legend span { display: inline-flex; align-items: center; gap: 0.3rem; }
.missing { font-size: 0.85rem; color: #666; }
"""

_SCRIPT = r"""
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
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>XNOR-Net zoo: model leaderboard</title>
<style>{style}</style>
</head>
<body>
<h1>XNOR-Net zoo: model leaderboard</h1>
<p>Generated by <code>zoo cards</code> from the config.json of each of the {count} cards; every model links to its
card. Click a column header to sort (n/a sorts last); the order is kept in the address, e.g.
<code>#sort=top1-desc</code>.</p>
<p>Accuracy "measured here" is the zoo's own test-split run; "{reported}" is the figure Rastegari et al. report in
<a href="{paper_url}">the XNOR-Net paper</a>, shown for comparison next to the packed size and CPU latency the zoo
measures on the same architecture. CPU latency is the packed model at batch 1; hover a point for the input size,
threads and hardware it was measured on.</p>
<table id="leaderboard">
<thead><tr>{head}</tr></thead>
<tbody>
{body}
</tbody>
</table>
<div id="legend"></div>
<div class="plots">
<figure><svg id="plot-size" class="plot" role="img" aria-label="top-1 against packed size"></svg>
<figcaption>Top-1 accuracy against packed size (log scale).</figcaption><p id="plot-size-missing" class="missing"></p>
</figure>
<figure><svg id="plot-latency" class="plot" role="img" aria-label="top-1 against CPU latency"></svg>
<figcaption>Top-1 accuracy against CPU latency at batch 1.</figcaption><p id="plot-latency-missing" class="missing"></p>
</figure>
</div>
<script type="application/json" id="cards-data">{data}</script>
<script>{script}</script>
</body>
</html>
"""
