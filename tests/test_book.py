"""The book: every notebook runs in smoke mode (on 2 workers, see ``BOOK_WORKERS``), the book builds
with warnings as errors, and in a headless Chromium every page draws all of its charts with nothing
requested from outside the machine.

The book is built in a temporary copy (``_config.yml``, ``_toc.yml``, ``book/``) so the working tree's
``book/executed``, ``results`` and ``_build`` are left alone. It builds whatever ``_toc.yml`` lists.
Set ``SEQCIRC_BOOK_TEST_MODEL`` to run the notebooks on another model (default: each notebook's own).

Browser check, per page of ``_build/html``: the page is served by a local HTTP server that records
every request, and loaded by ``chromium --headless --dump-dom`` after a virtual-time budget with
host resolution of everything but localhost disabled and a net log written. Then:

- the number of ``vega-embed`` elements (the class vegaEmbed gives a chart's container once drawn)
  equals the number of chart containers on the page (``seqcirc-chart``, written by
  :mod:`seqcirc_utils.report.plots`), and no chart shows an error;
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
from record_fixtures import example, row

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.results import RESULTS_ROOT_ENV
from seqcirc_utils.report import plots
from seqcirc_utils.report.findings import NO_READER, NOT_RUN, UNREADABLE, ChapterStatus, findings_markdown
from seqcirc_utils.report.plots import CHART_CLASS, FIGURE_CLASS
from seqcirc_utils.workflow import book as book_assets
from seqcirc_utils.workflow.runner import find_notebooks, run_notebooks, summary_table

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--no-pings",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
#: Attributes through which a browser loads something (``<a href>`` is only a link and is not listed).
RESOURCE_ATTRS = {"src", "srcset", "data", "poster", "background"}

#: The smoke book runs on 2 single-threaded Dask workers, two notebooks at a time (``seqcirc run --workers 2``).
BOOK_WORKERS = 2
#: The tests of the built book run every notebook (in smoke mode) on its default, embedded model.
BUILT_BOOK = (pytest.mark.book, pytest.mark.embedded, pytest.mark.slow)


def built_book_test(func):
    for mark in BUILT_BOOK:
        func = mark(func)
    return func


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


class _Text(HTMLParser):
    """The text a reader sees: every text node outside ``<script>`` and ``<style>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def page_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return "".join(parser.parts)


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
    return [
        (e["params"].get("initiator", ""), e["params"]["url"])
        for e in data["events"]
        if types.get(e["type"]) == "URL_REQUEST_START_JOB" and "url" in e.get("params", {})
    ]


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
    shutil.copytree(
        ROOT / "book",
        root / "book",
        ignore=shutil.ignore_patterns("executed", "_build", "_generated", "vendor", ".ipynb_checkpoints"),
    )
    saved = os.environ.get(RESULTS_ROOT_ENV)
    os.environ[RESULTS_ROOT_ENV] = str(root / "results")
    try:
        params: dict = {"smoke": True}
        if model := os.environ.get("SEQCIRC_BOOK_TEST_MODEL"):
            params["model"] = model
        runs = run_notebooks(
            find_notebooks(),
            params,
            out_dir=root / "book" / "executed",
            cwd=root,
            keep_going=True,
            progress=False,
            workers=BOOK_WORKERS,
        )
        print(summary_table(runs))
        book_assets.build(root)
    finally:
        if saved is None:
            os.environ.pop(RESULTS_ROOT_ENV, None)
        else:
            os.environ[RESULTS_ROOT_ENV] = saved
    build = subprocess.run(
        [str(Path(sys.executable).with_name("jupyter-book")), "build", str(root), "-W", "--keep-going"],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    return root, runs, build


@built_book_test
def test_every_notebook_runs_in_smoke_mode(built_book):
    _, runs, _ = built_book
    assert runs, "no notebooks found"
    failed = [f"{r.notebook.stem}: {r.error}" for r in runs if not r.ok]
    assert not failed, "notebooks failed in smoke mode:\n" + "\n".join(failed)


@built_book_test
def test_book_builds_with_warnings_as_errors(built_book):
    root, _, build = built_book
    assert build.returncode == 0, (build.stdout + build.stderr)[-6000:]
    html = root / "_build" / "html"
    for page in ("book/intro.html", "book/methods.html", "book/published.html", "book/executed/01_behaviour.html"):
        assert (html / page).is_file(), page
    intro = (html / "book" / "intro.html").read_text()
    assert "01_behaviour" in intro and "smoke mode" in intro  # the generated runs table is included


@built_book_test
def test_published_page_reads_what_the_notebooks_wrote(built_book):
    """Every anchor with a reader finds its number in the smoke run's result files (schemas agree)."""
    from seqcirc_utils.core.results import results_dir
    from seqcirc_utils.models.loading import EMBEDDED_MODEL
    from seqcirc_utils.report.published import ANCHORS, comparison_table

    root, _, _ = built_book
    model = os.environ.get("SEQCIRC_BOOK_TEST_MODEL") or EMBEDDED_MODEL
    table = comparison_table(results_dir(model, root=root / "results")).set_index("quantity")
    unread = [
        a.quantity for a in ANCHORS if a.ours is not None and table.loc[a.quantity, "this run"] == "not in this run"
    ]
    assert not unread, f"anchors whose result is missing from the smoke run: {unread}"
    published = (root / "_build" / "html" / "book" / "published.html").read_text()
    assert table.loc["numerals circuit on number-word data", "this run"] in published


@built_book_test
def test_every_result_file_is_a_typed_record(built_book):
    """Every JSON file the smoke run writes to results/<model>/ has kind and schema_version, is the type its file
    name says, and round-trips exactly through that type (file -> record -> JSON is the file)."""
    from seqcirc_utils.core.result_records import RESULT_RECORDS, record_type_of_file
    from seqcirc_utils.core.results import results_dir
    from seqcirc_utils.discovery.edges.search import EdgeCircuit
    from seqcirc_utils.models.loading import EMBEDDED_MODEL

    root, _, _ = built_book
    folder = results_dir(os.environ.get("SEQCIRC_BOOK_TEST_MODEL") or EMBEDDED_MODEL, root=root / "results")
    files = sorted(folder.glob("*.json"))
    types = {t.kind: t for t in (*RESULT_RECORDS, EdgeCircuit)}
    assert {t.file for t in RESULT_RECORDS if "*" not in t.file} <= {p.name for p in files}, "a chapter wrote no file"
    problems = []
    for path in files:
        data = json.loads(path.read_text())
        kind = data.get("kind") if isinstance(data, dict) else None
        if kind not in types or "schema_version" not in data:
            problems.append(f"{path.name}: kind {kind!r} is no record type (or no schema_version)")
            continue
        record_type = types[kind]
        if record_type_of_file(path.name) not in (record_type, None) or (
            record_type is EdgeCircuit
        ) != path.name.startswith("edges_"):
            problems.append(f"{path.name}: holds kind {kind!r}, not the type its name says")
        try:
            if record_type.from_json(data).to_json() != data:
                problems.append(f"{path.name}: {record_type.__name__}.from_json(...).to_json() differs from the file")
        except ValueError as err:
            problems.append(f"{path.name}: {err}")
    assert not problems, "\n".join(problems)


@built_book_test
def test_appendix_draws_the_per_head_records(built_book):
    """The appendix groups its figures by chapter, as captioned small multiples of the chapters' per-head records."""
    root, _, _ = built_book
    appendix = next((root / "_build" / "html" / "book" / "executed").glob("90_*.html")).read_text()
    text = " ".join(page_text(appendix).split())
    for chapter, source in (
        ("02_shared_circuits", "shared_circuits.json"),
        ("03_greater_than_overlap", "greater_than_overlap.json"),
        ("04_decreasing_circuits", "decreasing_circuits.json"),
    ):
        assert chapter in text, f"the appendix has no section for {chapter}"
        assert f"From {source}, head_importance" in text, f"the appendix has no figure from {source}"
    assert text.index("02_shared_circuits") < text.index("03_greater_than_overlap") < text.index("04_decreasing")
    assert "estimated drop, in points of the full model's metric" in text  # a human caption, not a key
    for source in ("successor_heads.json, scores", "knockout.json, compensation"):
        assert f"From {source}" in text, f"the appendix has no head_scores figure from {source}"
    for source in ("induction_offsets.json", "successor_heads.json"):
        assert f"Attention patterns stored in {source}" in text, f"no attention_pattern figure from {source}"


@built_book_test
def test_pages_read_like_a_report(built_book):
    """No progress output on any page; code folded; every chart a numbered, captioned figure; findings complete."""
    from seqcirc_utils.report.findings import UNREADABLE

    root, runs, build = built_book
    html_dir = root / "_build" / "html"
    problems = []
    for page in sorted(html_dir.glob("book/**/*.html")):
        raw = page.read_text()
        name = page.relative_to(html_dir).as_posix()
        if found := book_assets.progress_lines(page_text(raw)):
            problems.append(f"{name}: progress output, e.g. {found[0][:80]!r}")
        els = elements(raw)
        charts, figures = with_class(els, CHART_CLASS), with_class(els, FIGURE_CLASS)
        if charts != figures:
            problems.append(f"{name}: {charts} charts but {figures} numbered figures")
        if figures:
            numbers = [int(n) for n in re.findall(r"<strong>Figure (\d+)\.</strong>", raw)]
            if numbers != list(range(1, figures + 1)):
                problems.append(f"{name}: figure numbers {numbers}")
        if name.startswith("book/executed/"):
            cells = [a for t, a in els if t == "div" and "cell" in a.get("class", "").split()]
            code = [a for a in cells if "tag_remove-cell" not in a.get("class", "")]
            unfolded = [a["class"] for a in code if "tag_hide-input" not in a.get("class", "").split()]
            if unfolded:
                problems.append(f"{name}: {len(unfolded)} of {len(code)} code cells not folded")
            if "Parameters of this run" not in raw:
                problems.append(f"{name}: no parameters block")
            if "injected-parameters" in page_text(raw) or "# Parameters" in page_text(raw):
                problems.append(f"{name}: papermill's injected parameters are shown")
    findings = (html_dir / "book" / "findings.html").read_text()
    text = " ".join(page_text(findings).split())
    if UNREADABLE in text:
        problems.append(
            "findings: a reader could not summarise its chapter: " + text[text.index(UNREADABLE) - 200 :][:400]
        )
    if NO_READER in text:
        problems.append("findings: a chapter has no headline reader: " + text[text.index(NO_READER) - 200 :][:300])
    for run in runs:
        if run.ok and run.notebook.number < 90 and f"{run.notebook.stem}.html" not in findings:
            problems.append(f"findings: no link to {run.notebook.stem}")
    assert not problems, "\n".join(problems)


@built_book_test
def test_findings_headlines_state_n_and_p(built_book):
    """The Findings page opens with its abstract: a row per claim tested against a null, each with its number of
    draws and its p-value (a claim without them fails here), chapters 02, 03 and 10 among them."""
    root, _, _ = built_book
    text = (root / "book" / "_generated" / "findings.md").read_text()
    assert text.startswith("## At a glance"), text[:300]
    abstract = text.split("## Chapter by chapter")[0]
    rows = [line for line in abstract.splitlines() if line.startswith("| ") and not line.startswith("| claim")]
    assert rows, "the abstract has no claim tested against a null"
    problems = []
    for line in rows:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))]
        n, p = cells[3], cells[5]
        if not (n.isdigit() and int(n) >= 1 and re.fullmatch(r"[01]\.\d+", p) and 0 < float(p) <= 1):
            problems.append(f"headline without n and p: {line}")
    assert not problems, "\n".join(problems)
    chapters = " ".join(rows)
    for chapter in ("02_shared_circuits", "03_greater_than_overlap", "10_knockout"):
        assert chapter in chapters, f"no headline of {chapter}"
    assert 'class="seqcirc-figure"' in abstract  # the summary figure


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


@built_book_test
def test_pages_render_all_charts_offline(server, tmp_path):
    browser = chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium not installed: apt-get install -y chromium")
    base, html_dir = server
    pages = sorted(
        p.relative_to(html_dir).as_posix()
        for p in html_dir.rglob("*.html")
        if not p.relative_to(html_dir).parts[0].startswith("_") and p.name != "index.html"
    )
    assert "book/executed/01_behaviour.html" in pages
    problems: list[str] = []
    total_charts = 0
    for i, page in enumerate(pages):
        expected = with_class(elements((html_dir / page).read_text()), CHART_CLASS)
        total_charts += expected
        netlog = tmp_path / f"net{i}.json"
        url = f"{base}/{page}"
        res = subprocess.run(
            [
                browser,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={tmp_path / f'profile{i}'}",
                f"--log-net-log={netlog}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
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


# --------------------------------------------------------------------------- unit tests (no notebook run, no build)

TQDM_BAR = "prune (digits):  45%|████▌     | 9/20 [00:01<00:02,  4.50it/s]"


@pytest.mark.parametrize(
    "text",
    [
        TQDM_BAR,
        "\rbehaviour:   0%|          | 0/11 [00:00<?, ?it/s]",
        "edges: 100%|##########| 120/120 [00:09<00:00, 12.3it/s]",
        "sweep 3/30 [00:05<00:45, 1.52s/it]",
        "layer 4 of 30\rlayer 5 of 30",  # a line redrawn in place
        "wrote results/x.json\n" + TQDM_BAR + "\ndone",
    ],
)
def test_progress_detector_finds_progress_bars(text):
    assert book_assets.has_progress(text)


@pytest.mark.parametrize(
    "text",
    [
        "The circuit keeps 80 % of the full logit difference (45 % on number-word data).",
        "| task | score |\n|---|---|\n| digits | 80 |",
        "L9.H1 attends 0.45 to the last member; 12 of 20 heads, 3/4 of the prompts [see Methods].",
        "wrote results/smollm2-135m/behaviour.json\n",
        "seconds 1.5, forward passes 120",
    ],
)
def test_progress_detector_leaves_prose_and_tables_alone(text):
    assert not book_assets.has_progress(text)


def test_strip_progress_keeps_everything_else():
    text = "model=x n=3\n" + "".join(f"\r{TQDM_BAR}" for _ in range(3)) + "\r        \nwrote a.json\n\nend\n"
    assert book_assets.strip_progress(text) == "model=x n=3\nwrote a.json\n\nend\n"
    assert book_assets.strip_progress("10%|#| 1/10 [00:01<00:09, 1.0it/s]\r") == ""


def _executed_notebook():
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Title"),
        nbformat.v4.new_code_cell(
            'model = "smollm2-135m"  # the model\nn_prompts = 32  # prompts per task', metadata={"tags": ["parameters"]}
        ),
        nbformat.v4.new_code_cell("# Parameters\nn_prompts = 8\n", metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell(
            "import x",
            outputs=[
                nbformat.v4.new_output("stream", name="stderr", text=f"\r{TQDM_BAR}"),
                nbformat.v4.new_output("stream", name="stdout", text="wrote results/a.json\n"),
                nbformat.v4.new_output(
                    "display_data", data={"text/plain": "HBox(...)", book_assets.WIDGET_MIME: {"model_id": "1"}}
                ),
                nbformat.v4.new_output("execute_result", data={"text/plain": "42"}, execution_count=1),
            ],
        ),
    ]
    nb.metadata["papermill"] = {
        "parameters": {"n_prompts": 8},
        "default_parameters": {"model": "smollm2-135m", "n_prompts": 32},
    }
    return nb


def test_prepare_notebook_strips_progress_folds_code_and_shows_parameters():
    import nbformat

    nb = _executed_notebook()
    assert book_assets.prepare_notebook(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all("remove-cell" in c.metadata["tags"] for c in code[:2])  # both parameters cells
    assert "hide-input" in code[2].metadata["tags"]
    outputs = code[2].outputs
    assert [o["output_type"] for o in outputs] == ["stream", "execute_result"]
    assert outputs[0]["text"] == "wrote results/a.json\n"
    block = [c for c in nb.cells if c.cell_type == "markdown" and "Parameters of this run" in c.source]
    assert len(block) == 1 and nb.cells.index(block[0]) == 1  # where the parameters cell was
    assert "| `n_prompts` | **`8`** | `32` | prompts per task |" in block[0].source
    assert "| `model` | `'smollm2-135m'` |  | the model |" in block[0].source
    nbformat.validate(nb)
    assert not book_assets.prepare_notebook(nb), "a second run must change nothing"


def test_prepare_executed_rewrites_in_place(tmp_path):
    import nbformat

    nbformat.write(_executed_notebook(), tmp_path / "01_x.ipynb")
    assert book_assets.prepare_executed(tmp_path) == [tmp_path / "01_x.ipynb"]
    assert book_assets.prepare_executed(tmp_path) == []
    assert not book_assets.has_progress((tmp_path / "01_x.ipynb").read_text().replace("\\r", "\r"))


def test_failed_notebooks_are_listed(tmp_path, capsys):
    import nbformat

    executed = tmp_path / "book" / "executed"
    executed.mkdir(parents=True)
    for name, failed in (("01_ok", False), ("02_bad", True)):
        nb = _executed_notebook()
        nb.metadata["papermill"]["exception"] = failed
        nbformat.write(nb, executed / f"{name}.ipynb")
    assert book_assets.failed_notebooks(tmp_path / "book" / "executed") == ["02_bad"]
    assert book_assets.main(["--root", str(tmp_path), "--failed"]) == 0
    assert capsys.readouterr().out.split() == ["02_bad"]


def test_figures_are_numbered_per_page_and_need_a_caption():
    import altair as alt
    import pandas as pd

    chart = alt.Chart(pd.DataFrame({"x": [1, 2]})).mark_point().encode(x="x:Q")
    figures = plots.enable_offline()  # a chapter's numbering
    first, second = figures.figure(chart, "The `x` values."), figures.figure(chart, "Again.")
    assert (first.number, second.number) == (1, 2)
    html = second._repr_mimebundle_()["text/html"]
    assert f'class="{FIGURE_CLASS}"' in html and f'class="{CHART_CLASS}"' in html
    assert "<figcaption><strong>Figure 2.</strong> Again.</figcaption>" in html
    assert "<code>x</code>" in first.to_html()
    next_chapter = plots.enable_offline()
    assert next_chapter.figure(chart, "Next page.").number == 1
    assert figures.figure(chart, "Back in the first chapter.").number == 3  # each chapter owns its count
    assert not hasattr(plots, "figure") and not hasattr(plots, "reset_figures")  # no module-level counter
    with pytest.raises(ParameterError, match="caption"):
        figures.figure(chart, "  ")


def test_findings_say_not_run_and_read_the_numbers(tmp_path):
    from seqcirc_utils.core.result_records import Behaviour, MlpAblation
    from seqcirc_utils.core.results import write_json_atomic

    results = tmp_path / "smollm2-135m"
    rows = [
        row(Behaviour, "rows", task=t, template="pure", direction=d, n=n, top1_accuracy=acc, **more)
        for t, d, n, acc, more in (
            ("digits", "increasing", 8, 0.75, {}),
            ("months", "increasing", 8, 0.25, {}),
            ("digits", "decreasing", 8, 0.125, {}),
            ("greater_than", "increasing", 8, 0.5, {"prob_diff": 0.4567}),
            ("letters", "increasing", 0, None, {"error": "not single tokens"}),
        )
    ]
    write_json_atomic(results / "behaviour.json", example(Behaviour, smoke=False, rows=rows))
    # a file of its kind whose rows lack declared columns: the reader reports it (as a schema change would read)
    bad = example(MlpAblation, smoke=True).to_json() | {"mlp_effects": [{"task": "digits"}]}
    write_json_atomic(results / "mlp_ablation.json", bad)
    statuses = [
        ChapterStatus("01_behaviour", "Behaviour", executed=True),
        ChapterStatus("02_shared_circuits", "Shared", executed=True),
        ChapterStatus("04_decreasing_circuits", "Decreasing", executed=False),
        ChapterStatus("05_mlp_ablation", "MLPs", executed=True, failed=True),
    ]
    text = findings_markdown(statuses, results)
    lines = {line.split(".**")[0]: line for line in text.splitlines() if line.startswith("**")}
    behaviour = lines["**{doc}`Behaviour </book/executed/01_behaviour>`"]
    # mean of the increasing sequence rows (greater-than and unbuildable rows left out): (75 + 25) / 2
    assert "mean top-1 accuracy is 50 %" in behaviour and "against 12 % on 1 decreasing" in behaviour
    assert "digits / pure (75 %)" in behaviour and "45.7 %" in behaviour
    assert (
        f"*{NOT_RUN}*: `results/smollm2-135m/shared_circuits.json` is missing"
        in lines["**{doc}`Shared </book/executed/02_shared_circuits>`"]
    )
    assert f"*{NOT_RUN}*" in lines["**Decreasing"] and "{doc}" not in lines["**Decreasing"]
    mlps = lines["**{doc}`MLPs </book/executed/05_mlp_ablation>`"]
    assert (
        "failed" in mlps and UNREADABLE in mlps and "BadFileError" in mlps and "lacks ['component', 'kept_%']" in mlps
    )


def test_appendix_groups_result_files_by_the_chapter_that_writes_them(tmp_path):
    from seqcirc_utils.core.results import chapter_of, chapter_titles, result_writers

    (tmp_path / "02_shared.py").write_text(
        '# # Shared circuits\nwrite_circuits(out_dir / f"circuit_{task}.json", r)\n'
        'write_json_atomic(results_dir(model) / "shared.json", {})\n'
    )
    (tmp_path / "04_decreasing.py").write_text(
        '# %% [markdown]\n# # Decreasing\np = out_dir / f"circuit_{task}_{direction}_{length}.json"\n'
    )
    (tmp_path / "03_gt.py").write_text("x = out_dir / 'circuit_greater_than.json'\n")
    (tmp_path / "90_appendix.py").write_text('files = folder.glob("*.json"); read("shared.json")\n')
    writers = result_writers(tmp_path)
    assert writers == {
        "circuit_*.json": "02_shared",
        "shared.json": "02_shared",
        "circuit_greater_than.json": "03_gt",
        "circuit_*_*_*.json": "04_decreasing",
    }
    assert [
        chapter_of(n, writers)
        for n in (
            "circuit_digits.json",
            "circuit_number_words.json",
            "circuit_greater_than.json",
            "circuit_digits_decreasing_5.json",
            "shared.json",
            "unknown.json",
        )
    ] == ["02_shared", "02_shared", "03_gt", "04_decreasing", "02_shared", None]
    assert chapter_titles(tmp_path)["04_decreasing"] == "Decreasing"
    assert chapter_titles(tmp_path)["03_gt"] == "03_gt"


def test_per_head_panels_share_one_figure():
    """A head_scores record with a panel column and two scores: one figure, one column per score, one row per family."""
    from seqcirc_utils.core.records import HeadScores

    def rec(l, h, v, f):
        return {"component": f"L{l}.H{h}", "layer": l, "head": h, "next": v, "copy": -v, "family": f}

    record = HeadScores(
        scores=["next", "copy"],
        panels=["family"],
        rows=[rec(0, 0, 0.5, "digits"), rec(1, 1, 1.0, "digits"), rec(0, 0, 0.25, "months"), rec(1, 1, 0.0, "months")],
    )
    chart = plots.head_heatmap_panels(record.frame(), record.scores, record.panels, value_title="OV")
    spec = chart.to_dict()
    assert spec["columns"] == 2  # one column per score, one row per family
    values = spec["datasets"][spec["data"]["name"]]
    panels = {(v["panel"], v["layer"], v["head"]): v["value"] for v in values}
    assert panels[("digits · next", 1, 1)] == 1.0 and panels[("months · copy", 0, 0)] == -0.25
    assert len(panels) == 8


def test_representations_headline_reads_its_numbers():
    from seqcirc_utils.core.result_records import Representations
    from seqcirc_utils.report.findings import representations

    def test(observed, p, depth=17, n=99, percentile=100.0):
        return {"observed": observed, "depth": depth, "n": n, "null_p95": 0.1, "percentile": percentile, "p": p} | {
            "significant": p <= 0.05
        }

    successor = {
        "n_prompts": 48,
        "n_sequences": 9,
        "hit": {"unedited": 0.0, "value-step direction": 0.125, "random direction": 0.0},
        "correct": {"unedited": 0.9, "value-step direction": 0.7, "random direction": 0.9},
        "diff": 0.125,
        "diff_ci95": [0.0, 0.36],
        "passes": False,
        "alpha": 1.0,
        "depth": 16,
    }
    headline = {
        "center": "format",
        "n_depths": 31,
        "alpha": 0.05,
        "value_layer": 16,
        "same_value_cosine": 0.654,
        "diff_value_same_format_cosine": -0.5,
        "diff_value_diff_format_cosine": -0.33,
        "same_value_above_control_layers": 31,
        "value_gap": test(0.98, 0.01, depth=16),
        "value_gap_max": test(1.01, 0.01),
        "random_value_gap_max": test(0.15, 0.1, percentile=91.0),
        "step_layer": 16,
        "step_cosine": test(0.67, 0.01, depth=16),
        "step_cosine_max": test(0.73, 0.01, depth=1),
        "random_step_cosine_max": test(0.11, 0.23, percentile=78.0),
        "successor": successor,
        "direction_name": "value-step direction",
        "order_first_layer": 15,
        "order_accuracy_last": {"digits": 0.953, "months": 0.891},
        "order_chance": 0.5,
        "order_max": {"digits": test(0.94, 0.01, depth=21), "months": test(0.62, 0.31, depth=3, percentile=70.0)},
        "random_order_max": {"digits": test(0.62, 0.44), "months": test(0.69, 0.13)},
    }
    split = row(Representations, "split", values={"selection": [6, 8], "evaluation": [4, 5, 7]})
    text = representations(
        {Representations.file: example(Representations, families=["digits", "months"], headline=headline, split=split)}
    )
    for fragment in (
        "evaluation values 4, 5, 7",
        "selection values 6, 8",
        "depth 16 (format-centred): cosine 0.65 against -0.33",
        "gap 0.98, p = 0.01, percentile 100 of n = 99 permutations",
        "1.01 at depth 17",
        "random-weight model of the same shape reaches 0.15 (p = 0.10, percentile 91 of n = 99 permutations)",
        "The value-step direction",
        "on 12% against 0% for a random direction",
        "[+0.00, +0.36]): not distinguishable from random",
        "digits 0.94 (p = 0.01, percentile 100 of n = 99 permutations)",
        "months 0.62 (p = 0.31, percentile 70 of n = 99 permutations; not distinguishable from random)",
        "the random-weight model: digits 0.62 (p = 0.44)",
    ):
        assert fragment in text, (fragment, text)
    assert "next direction" not in text.replace("'next' direction", "")
    passed = representations(
        {
            Representations.file: example(
                Representations,
                families=["digits"],
                headline=headline | {"direction_name": "next direction", "successor": successor | {"passes": True}},
            )
        }
    )
    assert "The next direction" in passed and "it passes." in passed


def test_missing_mathjax_is_one_line_naming_the_extra(monkeypatch, capsys):
    """Without django-static-mathjax the build step says which extra to install (one line, exit 2)."""
    import builtins

    from seqcirc_utils.core.errors import MissingExtraError

    real_import = builtins.__import__

    def no_mathjax(name, *args, **kwargs):
        if name == "mathjax":
            raise ImportError("No module named 'mathjax'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mathjax)
    with pytest.raises(MissingExtraError, match=r"pip install 'seqcirc\[book\]'"):
        book_assets.mathjax_source()
    monkeypatch.setattr(book_assets, "build", lambda root: book_assets.mathjax_source())
    assert book_assets.main(["--root", "."]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seqcirc[book]" in err[0]
