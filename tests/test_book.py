"""The book: every notebook runs in smoke mode, the book builds with warnings as errors, and in a
headless Chromium every page draws all of its charts with nothing requested from outside the machine.

The book is built in a temporary copy (``_config.yml``, ``_toc.yml``, ``book/``) so the working tree's
``book/executed``, ``results`` and ``_build`` are left alone. It builds whatever ``_toc.yml`` lists.
Set ``SEQCIRC_BOOK_TEST_MODEL`` to run the notebooks on another model (default: each notebook's own).

Browser check, per page of ``_build/html``: the page is served by a local HTTP server that records
every request, and loaded by ``chromium --headless --dump-dom`` after a virtual-time budget with
host resolution of everything but localhost disabled and a net log written. Then:

- the number of ``vega-embed`` elements (the class vegaEmbed gives a chart's container once drawn)
  equals the number of chart containers on the page (``seqcirc-chart``, written by
  :mod:`seqcirc_utils.plots`), and no chart shows an error;
- every request the page made (net-log entries with a page origin as initiator) went to localhost,
  and so does every resource attribute in the final DOM (``src``, ``<link href>``, ...); links a
  reader may click (``<a href>``) may point anywhere;
- the local server answered no request with 404 (a missing vendored asset).

Chromium's own background requests (update checks and the like: no page initiator) are not the
page's; the resolver rules make them fail.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import pytest

from seqcirc_utils import book_assets
from seqcirc_utils.plots import CHART_CLASS
from seqcirc_utils.runner import find_notebooks, run_notebooks, summary_table

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--no-default-browser-check", "--disable-sync",
                  "--disable-extensions", "--disable-default-apps", "--disable-domain-reliability", "--no-pings",
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
#: Attributes through which a browser loads something (``<a href>`` is only a link and is not listed).
RESOURCE_ATTRS = {"src", "srcset", "data", "poster", "background"}

pytestmark = pytest.mark.embedded  # runs every notebook (in smoke mode) on its default, embedded model


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


class _Elements(HTMLParser):
    """Collects (tag, attrs) of every element of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, {k: v or "" for k, v in attrs}))


def elements(html: str) -> list[tuple[str, dict[str, str]]]:
    parser = _Elements()
    parser.feed(html)
    return parser.elements


def with_class(els, cls: str) -> int:
    return sum(cls in attrs.get("class", "").split() for _, attrs in els)


def is_local(url: str) -> bool:
    """Relative, fragment, data:/blob:/about: or on localhost."""
    parsed = urlparse(url.strip())
    if parsed.scheme in ("", "data", "blob", "about", "javascript"):
        return not url.strip().startswith("//")
    return parsed.scheme in ("http", "https", "ws", "wss") and parsed.hostname in LOCAL_HOSTS


def resource_urls(els) -> list[str]:
    urls = []
    for tag, attrs in els:
        for name, value in attrs.items():
            if name in RESOURCE_ATTRS or (tag == "link" and name == "href"):
                urls += [part.split()[0] for part in value.split(",") if part.strip()] if name == "srcset" else [value]
    return urls


def page_requests(netlog: Path) -> list[tuple[str, str]]:
    """``(initiator, url)`` of every URL request in a Chromium net log."""
    text = netlog.read_text(errors="replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:  # unterminated log: close it
        data = json.loads(text.rstrip().rstrip(",") + "]}")
    types = {v: k for k, v in data["constants"]["logEventTypes"].items()}
    return [(e["params"].get("initiator", ""), e["params"]["url"]) for e in data["events"]
            if types.get(e["type"]) == "URL_REQUEST_START_JOB" and "url" in e.get("params", {})]


class _Recorder(http.server.SimpleHTTPRequestHandler):
    log: list[tuple[str, int]] = []

    def log_request(self, code="-", size="-"):
        self.log.append((self.path, int(code) if str(code).isdigit() else 0))

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    """Run every notebook in smoke mode into a temporary copy of the book, then build it with -W."""
    root = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, root / name)
    shutil.copytree(ROOT / "book", root / "book", ignore=shutil.ignore_patterns(
        "executed", "_build", "_generated", "vendor", ".ipynb_checkpoints"))
    saved = os.environ.get("SEQCIRC_RESULTS")
    os.environ["SEQCIRC_RESULTS"] = str(root / "results")
    try:
        params: dict = {"smoke": True}
        if model := os.environ.get("SEQCIRC_BOOK_TEST_MODEL"):
            params["model"] = model
        runs = run_notebooks(find_notebooks(), params, out_dir=root / "book" / "executed", cwd=root,
                             keep_going=True, progress=False)
        print(summary_table(runs))
        book_assets.build(root)
    finally:
        if saved is None:
            os.environ.pop("SEQCIRC_RESULTS", None)
        else:
            os.environ["SEQCIRC_RESULTS"] = saved
    build = subprocess.run([str(Path(sys.executable).with_name("jupyter-book")), "build", str(root), "-W",
                            "--keep-going"], capture_output=True, text=True, timeout=1200)
    return root, runs, build


def test_every_notebook_runs_in_smoke_mode(built_book):
    _, runs, _ = built_book
    assert runs, "no notebooks found"
    failed = [f"{r.notebook.stem}: {r.error}" for r in runs if not r.ok]
    assert not failed, "notebooks failed in smoke mode:\n" + "\n".join(failed)


def test_book_builds_with_warnings_as_errors(built_book):
    root, _, build = built_book
    assert build.returncode == 0, (build.stdout + build.stderr)[-6000:]
    html = root / "_build" / "html"
    for page in ("book/intro.html", "book/methods.html", "book/published.html", "book/executed/01_behaviour.html"):
        assert (html / page).is_file(), page
    intro = (html / "book" / "intro.html").read_text()
    assert "01_behaviour" in intro and "smoke mode" in intro  # the generated runs table is included


def test_published_page_reads_what_the_notebooks_wrote(built_book):
    """Every anchor with a reader finds its number in the smoke run's result files (schemas agree)."""
    from seqcirc_utils.models import EMBEDDED_MODEL
    from seqcirc_utils.published import ANCHORS, comparison_table
    from seqcirc_utils.results import results_dir

    root, _, _ = built_book
    model = os.environ.get("SEQCIRC_BOOK_TEST_MODEL") or EMBEDDED_MODEL
    table = comparison_table(results_dir(model, root=root / "results")).set_index("quantity")
    unread = [a.quantity for a in ANCHORS if a.ours is not None and table.loc[a.quantity, "this run"] == "not in this run"]
    assert not unread, f"anchors whose result is missing from the smoke run: {unread}"
    published = (root / "_build" / "html" / "book" / "published.html").read_text()
    assert table.loc["numerals circuit on number-word data", "this run"] in published


def test_appendix_draws_the_per_head_records(built_book):
    root, _, _ = built_book
    appendix = next((root / "_build" / "html" / "book" / "executed").glob("90_*.html")).read_text()
    for source in ("shared_circuits.json: head_importance", "greater_than_overlap.json: head_importance",
                   "decreasing_circuits.json: head_importance"):
        assert source in appendix, f"the appendix has no figure from {source}"


@pytest.fixture(scope="module")
def server(built_book):
    root, _, build = built_book
    if build.returncode != 0:
        pytest.fail("the book did not build")
    _Recorder.log = []
    handler = functools.partial(_Recorder, directory=str(root / "_build" / "html"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root / "_build" / "html"
    httpd.shutdown()
    httpd.server_close()


def test_pages_render_all_charts_offline(server, tmp_path):
    browser = chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium not installed: apt-get install -y chromium")
    base, html_dir = server
    pages = sorted(p.relative_to(html_dir).as_posix() for p in html_dir.rglob("*.html")
                   if not p.relative_to(html_dir).parts[0].startswith("_") and p.name != "index.html")
    assert "book/executed/01_behaviour.html" in pages
    problems: list[str] = []
    total_charts = 0
    for i, page in enumerate(pages):
        expected = with_class(elements((html_dir / page).read_text()), CHART_CLASS)
        total_charts += expected
        netlog = tmp_path / f"net{i}.json"
        url = f"{base}/{page}"
        res = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / f'profile{i}'}",
                              f"--log-net-log={netlog}", "--virtual-time-budget=10000", "--dump-dom", url],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, f"{page}: chromium failed: {res.stderr[-2000:]}"
        dom = elements(res.stdout)
        drawn = with_class(dom, "vega-embed")
        if drawn != expected:
            problems.append(f"{page}: {drawn} of {expected} charts rendered")
        if errors := with_class(dom, "seqcirc-chart-error"):
            problems.append(f"{page}: {errors} charts show an error")
        problems += [f"{page}: DOM loads {u}" for u in resource_urls(dom) if not is_local(u)]
        for initiator, requested in page_requests(netlog):
            from_page = initiator not in ("", "not an origin")
            if (from_page or requested == url) and not is_local(requested):
                problems.append(f"{page}: requested {requested} (initiator {initiator})")
    missing = sorted({path for path, code in _Recorder.log if code == 404 and not path.startswith("/favicon.ico")})
    problems += [f"404 from the local server: {path}" for path in missing]
    assert total_charts >= 2, "expected charts on the behaviour page"
    assert not problems, "\n".join(problems)
