"""cards/index.html: generated from synthetic card configs, then rendered by headless Chromium.

The browser tests read the DOM after the page's own script ran (``--dump-dom``): the table rows and their values, the
two SVG scatter plots (one linked point per card, placed by the card's figures), the sort applied from the URL hash,
and real clicks on the column headers (a wrapper page drives the leaderboard in an iframe). They skip when Chromium
is not installed (``apt install chromium``).
"""

import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from urllib.parse import quote

import pytest

from zoo.hub.latency import with_latency
from zoo.hub.leaderboard import leaderboard_html

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not found: apt install chromium")

ODD = "x<&\"'y"
REPORTED = "reported in the paper, not reproduced here"


def _card(name, architecture, top1, packed, float_bytes, fit=None, dataset="digits", reported=False):
    accuracy = {"dataset": dataset, "split": "test", "top1": top1, "top5": 1.0}
    config = {
        "format_version": 1,
        "name": name,
        "architecture": architecture,
        "scheme": {"name": architecture.split("_")[0]},
        "num_classes": 1000,  # the bench's network (3x224x224, 1000 classes): the bench's figure is the card's own
        "in_chans": 3,
        "input_size": [3, 224, 224],
        "sizes": {"packed_bytes": packed, "float_bytes": float_bytes},
    }
    if reported:
        config["reported"] = {**accuracy, "split": "validation", "top5": 0.732, "source": "Rastegari et al. 2016"}
    else:
        config["training"] = {**accuracy, "fit_seconds": fit, "hardware": "AMD EPYC, 2 cores"}
    return config


BENCH = {
    "meta": {"device": "cpu", "hardware": "AMD EPYC 7B13, 2 cores", "torch": "2.14.1", "threads": 2, "repeats": 11},
    "end_to_end": [
        {"model": "xnor_resnet18", "baseline": "resnet18", "batch": 1, "input_size": [3, 224, 224],
         "float_ms": 46.7, "packed_ms": 18.0, "speedup": 2.6},
        {"model": "bwn_resnet18", "baseline": "resnet18", "batch": 1, "input_size": [3, 224, 224],
         "float_ms": 46.7, "packed_ms": 25.0, "speedup": 1.9},
        {"model": "fp_resnet18", "baseline": "resnet18", "batch": 1, "input_size": [3, 224, 224],
         "float_ms": 46.7, "packed_ms": 46.9, "speedup": 1.0},
        {"model": "xnor_resnet34", "baseline": "resnet34", "batch": 16, "input_size": [3, 224, 224],
         "float_ms": 1500.0, "packed_ms": 600.0, "speedup": 2.5},
    ],
    "conv": [],
    "sizes": [],
}

CONFIGS = with_latency(
    [
        _card(ODD, "xnor_resnet18", 0.90, 1_596_256, 44_791_080, fit=281.0),
        _card("bwn_resnet18-digits", "bwn_resnet18", 0.95, 1_526_000, 44_730_000, fit=241.0),
        _card("fp_resnet18-digits", "fp_resnet18", 0.99, 44_741_000, 44_730_000, fit=216.0),
        _card("xnor_resnet34-digits", "xnor_resnet34", 0.60, 2_500_000, 85_000_000, fit=400.0),
        _card("xnor_resnet18-imagenet", "xnor_resnet18", 0.512, 3_660_000, 46_810_000, dataset="imagenet",
              reported=True),
    ],
    BENCH,
)
NAMES = [c["name"] for c in CONFIGS]
# name: (top-1, accuracy source, packed, compression, CPU latency, training time), as the table shows them
EXPECTED = {
    ODD: ("90.00%", "measured here", "1.596 MB", "28.1x", "18.0 ms", "281 s"),
    "bwn_resnet18-digits": ("95.00%", "measured here", "1.526 MB", "29.3x", "25.0 ms", "241 s"),
    "fp_resnet18-digits": ("99.00%", "measured here", "44.741 MB", "1.0x", "46.9 ms", "216 s"),
    "xnor_resnet34-digits": ("60.00%", "measured here", "2.500 MB", "34.0x", "n/a", "400 s"),
    "xnor_resnet18-imagenet": ("51.20%", REPORTED, "3.660 MB", "12.8x", "18.0 ms", "n/a"),
}


class _Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children = tag, dict(attrs), parent, []

    def text(self):
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find_all(self, tag, **attrs):
        found = []
        for child in self.children:
            if isinstance(child, _Node):
                if child.tag == tag and all(child.attrs.get(k.rstrip("_")) == v for k, v in attrs.items()):
                    found.append(child)
                found += child.find_all(tag, **attrs)
        return found

    def find(self, tag, **attrs):
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag} {attrs}>"
        return found[0]


class _Tree(HTMLParser):
    """The dumped DOM as a tree of _Node (html.parser: the standard library has no DOM for HTML)."""

    VOID = {"meta", "br", "hr", "img", "input", "link"}

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.root = self.node = _Node("#root", {})
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        node = _Node(tag, attrs, self.node)
        self.node.children.append(node)
        if tag not in self.VOID:
            self.node = node

    def handle_endtag(self, tag):
        node = self.node
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.node = node.parent

    def handle_data(self, data):
        self.node.children.append(data)


def _dump(url, *flags):
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000", *flags,
         "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return _Tree(result.stdout).root


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The leaderboard alone: write_cards refuses ODD as a folder name, and the page must still show it escaped."""
    cards = tmp_path_factory.mktemp("leaderboard") / "cards"
    cards.mkdir()
    (cards / "index.html").write_text(leaderboard_html(CONFIGS), encoding="utf-8")
    return cards / "index.html"


def _rows(dom):
    return dom.find("table", id="leaderboard").find("tbody").find_all("tr")


def _order(dom):
    return [row.find("td", class_="model").text() for row in _rows(dom)]


def _points(dom, plot):
    return dom.find("svg", id=plot).find_all("a", class_="point")


def _xy(point):
    """The point's centre: every symbol path starts at an offset of it, the same for the same dataset's shape."""
    x, y = re.match(r"M(-?[\d.]+),(-?[\d.]+)", point.find("path").attrs["d"]).groups()
    return float(x), float(y)


@needs_chromium
def test_table_has_one_row_per_card_with_its_values_sorted_from_hash(page):
    dom = _dump(page.as_uri() + "#sort=top1-desc")
    assert _order(dom) == ["fp_resnet18-digits", "bwn_resnet18-digits", ODD, "xnor_resnet34-digits",
                           "xnor_resnet18-imagenet"]
    for row in _rows(dom):
        cells = {td.attrs["class"]: td for td in row.find_all("td")}
        name = cells["model"].text()
        assert cells["model"].find("a").attrs["href"] == quote(name, safe="") + "/README.md"
        shown = tuple(cells[k].text() for k in ("top1", "source", "packed", "compression", "latency", "fit"))
        assert shown == EXPECTED[name], name
        assert ("reported" in row.attrs.get("class", "")) == (name == "xnor_resnet18-imagenet")
    header = {th.attrs["data-key"]: th for th in dom.find("table", id="leaderboard").find_all("th")}
    assert header["top1"].attrs["aria-sort"] == "descending" and header["packed"].attrs["aria-sort"] == "none"


@needs_chromium
def test_na_sorts_last_in_both_directions(page):
    ascending = _order(_dump(page.as_uri() + "#sort=latency-asc"))
    descending = _order(_dump(page.as_uri() + "#sort=latency-desc"))
    assert ascending == [ODD, "xnor_resnet18-imagenet", "bwn_resnet18-digits", "fp_resnet18-digits",
                         "xnor_resnet34-digits"]
    assert descending == ["fp_resnet18-digits", "bwn_resnet18-digits", ODD, "xnor_resnet18-imagenet",
                          "xnor_resnet34-digits"]


@needs_chromium
def test_plots_have_one_linked_point_per_card_placed_by_its_figures(page):
    dom = _dump(page.as_uri())
    size_points = _points(dom, "plot-size")
    assert sorted(p.attrs["data-name"] for p in size_points) == sorted(NAMES)
    for point in size_points:
        name = point.attrs["data-name"]
        assert point.attrs["href"] == quote(name, safe="") + "/README.md"
        title = point.find("title").text().splitlines()
        assert title[0] == name and title[2].startswith(f"top-1 {EXPECTED[name][0]} ({EXPECTED[name][1]})")
        assert (point.find("path").attrs["fill"] == "#fff") == (name == "xnor_resnet18-imagenet")
    digits = {p.attrs["data-name"]: _xy(p) for p in size_points if p.attrs["data-name"] != "xnor_resnet18-imagenet"}
    by_x = sorted(digits, key=lambda n: digits[n][0])
    assert by_x == ["bwn_resnet18-digits", ODD, "xnor_resnet34-digits", "fp_resnet18-digits"]  # packed size
    assert sorted(digits, key=lambda n: digits[n][1]) == ["fp_resnet18-digits", "bwn_resnet18-digits", ODD,
                                                           "xnor_resnet34-digits"]  # top-1, SVG y grows down
    # a log axis: distances are ratios of log sizes (a linear axis would give 43.4 here, not 5.84)
    bwn, r34, fp = (digits[n][0] for n in ("bwn_resnet18-digits", "xnor_resnet34-digits", "fp_resnet18-digits"))
    ratio = (fp - r34) / (r34 - bwn)
    assert ratio == pytest.approx(math.log(44.741 / 2.5) / math.log(2.5 / 1.526), rel=1e-6)

    latency_points = _points(dom, "plot-latency")
    assert sorted(p.attrs["data-name"] for p in latency_points) == sorted(set(NAMES) - {"xnor_resnet34-digits"})
    assert "xnor_resnet34-digits" in dom.find("p", id="plot-latency-missing").text()
    assert dom.find("p", id="plot-size-missing").text() == ""
    lat = {p.attrs["data-name"]: _xy(p)[0] for p in latency_points if p.attrs["data-name"] in digits}
    assert lat[ODD] < lat["bwn_resnet18-digits"] < lat["fp_resnet18-digits"]  # a linear axis: 18, 25, 46.9 ms
    assert (lat["fp_resnet18-digits"] - lat["bwn_resnet18-digits"]) / (lat["bwn_resnet18-digits"] - lat[ODD]) == (
        pytest.approx((46.9 - 25.0) / (25.0 - 18.0), rel=1e-6))
    labels = {t.text() for t in dom.find_all("text")}
    assert {"packed size (MB, log scale)", "CPU latency, batch 1 (ms)", "top-1 accuracy (%)"} <= labels
    legend = dom.find("div", id="legend").text()
    for item in ("scheme bwn", "scheme fp", "scheme xnor", "dataset digits", "dataset imagenet", REPORTED):
        assert item in legend


WRAPPER = """<!DOCTYPE html><html><body><pre id="result">not run</pre><iframe id="page" src="cards/index.html"></iframe>
<script>
const frame = document.getElementById("page");
frame.addEventListener("load", () => {
  const doc = frame.contentDocument;
  const column = (key) => Array.from(doc.querySelectorAll(`#leaderboard tbody td.${key}`)).map((td) => td.textContent);
  const order = () => column("model");
  const click = (key) => doc.querySelector(`th[data-key="${key}"] button`).click();
  const out = {};
  click("packed"); out.packed_first = order();
  click("packed"); out.packed_second = order();
  click("scheme"); out.scheme = column("scheme");
  out.hash = frame.contentWindow.location.hash;
  out.aria = doc.querySelector('th[data-key="scheme"]').getAttribute("aria-sort");
  document.getElementById("result").textContent = JSON.stringify(out);
});
</script></body></html>"""


@needs_chromium
def test_clicking_headers_sorts_and_records_the_order(page):
    wrapper = page.parent.parent / "wrapper.html"
    wrapper.write_text(WRAPPER, encoding="utf-8")
    result = json.loads(_dump(wrapper.as_uri(), "--allow-file-access-from-files").find("pre", id="result").text())
    by_size = ["fp_resnet18-digits", "xnor_resnet18-imagenet", "xnor_resnet34-digits", ODD, "bwn_resnet18-digits"]
    assert result["packed_first"] == by_size  # a number column sorts largest first on the first click
    assert result["packed_second"] == by_size[::-1]
    assert result["scheme"] == ["bwn", "fp", "xnor", "xnor", "xnor"]
    assert result["hash"] == "#sort=scheme-asc" and result["aria"] == "ascending"


def test_page_escapes_config_text_and_loads_nothing_from_elsewhere():
    evil = '</script><script>alert("x")</script><b>&\''
    html = leaderboard_html([{**CONFIGS[1], "name": evil}])
    assert html.count("</script>") == 2 and "<b>" not in html and 'alert("x")' not in html
    assert "&lt;/script&gt;&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;b&gt;&amp;&#x27;" in html
    data = re.search(r'<script type="application/json" id="cards-data">(.*?)</script>', html, re.S).group(1)
    assert json.loads(data)[0]["name"] == evil
    assert json.loads(data)[0]["href"] == quote(evil, safe="") + "/README.md"
    assert "<link" not in html and " src=" not in html and "@import" not in html and "url(" not in html
