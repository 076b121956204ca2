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

The page's template, style sheet and script are package files beside this module (``leaderboard.html``,
``leaderboard.css``, ``leaderboard.js``), read with ``importlib.resources``.
"""

from __future__ import annotations

import json
from html import escape
from importlib import resources
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


def _asset(name: str) -> str:
    """A file of the page (its template, style sheet and script) from the package."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


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
    return _asset("leaderboard.html").format(
        count=len(rows),
        paper_url=escape(PAPER_URL),
        reported=escape(ACCURACY_SOURCE_TEXT[REPORTED]),
        head=head,
        body=body,
        data=_script_json(data),
        style=_asset("leaderboard.css"),
        script=_asset("leaderboard.js"),
    )
