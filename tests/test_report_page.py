"""The report page: numbers formatted for people (qoeflow.humanize), one section per stage of the DAG, and
the smoke run's page checked in a real browser — headless Chromium (Debian's `chromium`) loads it, every
image decodes, nothing reaches the console, the table of contents links every section, and the page is
no wider than its viewport. The full-page screenshot is kept for a person to look at:
`.qoeflow/screenshots/report.png` under the repository root (git-ignored)."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from browser import WIDTH, Browser
from conftest import REPO, SMOKE_STAGES
from qoeflow import humanize as hz

SECTIONS = [s for s in SMOKE_STAGES if s != "report"]  # the stages the report has a section for
FIGURES = ["validation loss and metric per epoch, per job", "forecast curves with bands, per job",
           "E_sum by method over a budget sweep", "planned against realised epochs per job over the run",
           "accuracy against MACs; DMS latency against Eq. 2",
           "accuracy per exit", "latency against accuracy, Pareto front",
           "convolutional caching per crowd job and clip",
           "normalised QoE against rounds, regret per method",
           "DMS control of one task: latency, level, accuracy",
           "DMS control of concurrent tasks: latency, level, accuracy",
           "query speedup, ingest cost, precision and recall"]  # the sections' figures, in page order
SCREENSHOT = REPO / ".qoeflow" / "screenshots" / "report.png"


# -- numbers for people ----------------------------------------------------------------------------


@pytest.mark.parametrize("value, text", [
    (38932480, "38.9 M"), (35659, "35.7 k"), (512, "512"), (999_960, "1 M"), (1_500_000_000, "1.5 G"), (0, "0"),
])
def test_si_counts(value, text):
    assert hz.si(value) == text
    assert hz.si(38932480, "MACs") == "38.9 M MACs"


@pytest.mark.parametrize("seconds, text", [
    (8.978e-05, "0.09 ms"), (0.007432846, "7.43 ms"), (0.0468, "46.8 ms"), (1.25, "1,250 ms"), (1e-6, "< 0.01 ms"),
])
def test_milliseconds(seconds, text):
    assert hz.milliseconds(seconds) == text


@pytest.mark.parametrize("seconds, text", [
    (4.67e-05, "47 µs"), (0.0069, "6.9 ms"), (0.78, "0.78 s"), (18.68, "18.7 s"), (125, "2 min 05 s"),
    (7384, "2 h 03 min"), (0, "0 s"),
])
def test_duration(seconds, text):
    assert hz.duration(seconds) == text


@pytest.mark.parametrize("value, text", [
    (1.3181605, "1.32"), (116.70147, "117"), (0.000467, "0.000467"), (1234.0, "1,234"), (1234, "1,234"),
    (0.1, "0.1"), (38932480.0, "38.9 M"), (-2.5, "-2.5"),
])
def test_number(value, text):
    assert hz.number(value) == text


@pytest.mark.parametrize("value, text", [
    (0.0996, "0.0996 s"), (2.2913, "2.29 s"), (18.68, "18.7 s"), (125, "2 min 05 s"),
])
def test_seconds_for_a_column(value, text):
    assert hz.seconds(value) == text


def test_sizes_percent_ratio_and_missing_values():
    assert [hz.size(b) for b in (812, 150997, 2_500_000)] == ["812 B", "151 kB", "2.5 MB"]
    assert [hz.percent(f) for f in (0.5, 0.8342, 0.0123, 1.0)] == ["50 %", "83 %", "1.2 %", "100 %"]
    assert [hz.ratio(r) for r in (0.42, 1.0, 12.5)] == ["×0.42", "×1", "×12.5"]
    assert [hz.fixed(q) for q in (0.8, 0.82429, 1234.5)] == ["0.800", "0.824", "1,234.500"]
    for formatter in (hz.number, hz.fixed, hz.si, hz.size, hz.milliseconds, hz.seconds, hz.duration, hz.percent,
                      hz.ratio):
        assert {formatter(v) for v in (None, math.nan, math.inf, "x")} == {hz.MISSING}, formatter.__name__


def test_numpy_scalars_format_like_python_numbers():
    import numpy as np

    assert hz.number(np.int64(35659)) == "35,659"
    assert hz.si(np.int64(9076800), "MACs") == "9.08 M MACs"
    assert hz.milliseconds(np.float64(8.978e-05)) == "0.09 ms"


# -- the smoke run's page --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke(smoke_project):
    """The suite's shared smoke project (conftest: one `qoeflow run` of dags/smoke.yaml), read only here."""
    project, _ = smoke_project
    return project


def _context(project: Path, edit=None):
    """The report stage's context on the smoke project, in this process; `edit(dag)` may change the DAG."""
    from qoeflow.dag.spec import load_dag
    from qoeflow.params import effective_tree, validate_params
    from tasks.context import StageContext

    dag = load_dag(project / "dags/smoke.yaml")
    dag.path = "dags/smoke.yaml"
    if edit:
        edit(dag)
    tree = effective_tree(project / "params.yaml", dag.overrides)
    return StageContext(root=project, dag=dag, stage="report", params=validate_params(tree), tree=tree)


def test_page_has_one_section_per_known_stage_in_dag_order(smoke):
    page = (smoke / "data/smoke/report/index.html").read_text()
    positions = [page.find(f'<section id="stage-{name}">') for name in SECTIONS]
    assert all(p > 0 for p in positions) and positions == sorted(positions), positions
    assert page.find('<section id="stages">') < positions[0]
    assert "<h1>qoeflow smoke run</h1>" in page
    text = re.sub(r"<style>.*?</style>|<[^>]+>", " ", page, flags=re.S)  # what a reader sees
    assert "data:image" not in text and len(text) > 1000
    assert not re.findall(r"\d[eE][-+]?\d+", text), "numbers in scientific notation"
    assert not re.findall(r"\d\.0*[1-9]\d{4,}", text), "numbers with more digits than a reader needs"
    assert not re.findall(r"\b(nan|NaN|None|inf)\b", text)


def test_a_stage_absent_from_the_dag_has_no_section_and_a_new_one_needs_only_a_renderer(smoke, monkeypatch):
    """Drop `asha` from the DAG: its section and its row go. Add a stage of a task the report has a renderer
    for but no template: the generic template shows its text, tables and figures."""
    from qoeflow.dag.spec import Stage
    from tasks import report

    def edit(dag):
        del dag.stages["asha"]
        for stage in dag.stages.values():
            if "asha" in stage.deps:
                stage.deps.remove("asha")
        dag.stages["compress"] = Stage(task="compress", deps=["continue"], description="Smaller models.")
        dag.stages["report"].deps.append("compress")

    table = report.Table([report.Column("variant"), report.Column("MACs", True)], [report.Row(["pruned", hz.si(1.2e6)])])
    monkeypatch.setitem(report.SECTIONS, "compress", report.SectionDef(
        "compress", "Compression", lambda ctx, stage: {"text": f"rendered for <{stage}>", "tables": [table]}))
    page = report.render_page(_context(smoke, edit))
    assert 'id="stage-asha"' not in page and "against Ray Tune ASHA" not in page.lower()
    assert '<section id="stage-compress">' in page and '<a href="#stage-compress">Compression</a>' in page
    assert "rendered for &lt;compress&gt;" in page and "<td class=\"num\">1.2 M</td>" in page
    assert page.index('id="stage-continue"') < page.index('id="stage-compress"')


def test_stage_table_shows_the_run_record_only_when_it_describes_the_outputs(smoke, tmp_path, monkeypatch):
    """The report runs inside the run, which records each stage as it ends: every stage before the report
    `ran` with its seconds, the report's own row `writing this page`. A record older than the outputs (a
    stage run since by `dvc repro`) is left out."""
    from tasks import context, report

    page = (smoke / "data/smoke/report/index.html").read_text()
    assert page.count('<span class="status ran">ran (qoeflow run)</span>') == len(SECTIONS)
    assert '<span class="status writing">writing this page</span>' in page

    ctx = _context(smoke)
    run = {s["stage"]: s for s in json.loads((smoke / ".qoeflow/runs/last.json").read_text())["stages"]}
    rows = {r["stage"]: r for r in report.stage_rows(ctx, time.time(), set(SECTIONS))}
    for name in SECTIONS:
        assert rows[name]["status"] == "ran (qoeflow run)", rows[name]
        assert rows[name]["seconds"] == hz.seconds(run[name]["seconds"])
        own = all(o.path.startswith(f"data/smoke/{name}/") for o in ctx.dag.stages[name].outs.values())
        assert rows[name]["anchor"] == name and rows[name]["folder"] == (f"data/smoke/{name}/" if own else "")
    assert (rows["report"]["status"], rows["report"]["anchor"]) == ("writing this page", "")

    earlier = tmp_path / "last.json"  # the same record, written before the outputs
    shutil.copy(smoke / ".qoeflow/runs/last.json", earlier)
    old = min((smoke / o.path).stat().st_mtime for o in ctx.dag.stages["train"].outs.values()) - 3600
    os.utime(earlier, (old, old))
    monkeypatch.setattr(context, "RUN_RECORD", earlier)
    rows = {r["stage"]: r for r in report.stage_rows(ctx, time.time(), set(SECTIONS))}
    assert {(rows[n]["status"], rows[n]["seconds"]) for n in SECTIONS} == {("done", hz.MISSING)}


# -- in a real browser -----------------------------------------------------------------------------


CHECKS = """(async () => {
  const images = [...document.images];
  const decoded = await Promise.all(images.map(i => i.decode().then(() => true, () => false)));
  const toc = [...document.querySelectorAll('nav.toc a')].map(a => a.getAttribute('href'));
  const sections = [...document.querySelectorAll('main section[id]')].map(s => '#' + s.id);
  const root = document.documentElement;
  return {
    images: images.map((i, k) => ({alt: i.alt, complete: i.complete, width: i.naturalWidth, decoded: decoded[k]})),
    toc, sections,
    broken: toc.filter(h => !document.getElementById(h.slice(1))),
    scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, innerWidth: window.innerWidth,
    tables: [...document.querySelectorAll('.table-wrap')].map(w => ({
      label: w.getAttribute('aria-label'), scrollWidth: w.scrollWidth, clientWidth: w.clientWidth})),
    height: root.scrollHeight,
  };
})()"""


def _load(browser: Browser, url: str, width: int) -> dict:
    browser.send("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=False)
    browser.events.clear()
    browser.send("Page.navigate", url=url)
    browser.wait_for("Page.loadEventFired")
    browser.drain(0.5)
    return browser.evaluate(CHECKS)


def test_report_in_headless_chromium(smoke, browser, tmp_path):
    page = smoke / "data/smoke/report/index.html"
    url = page.resolve().as_uri()

    found = _load(browser, url, WIDTH)
    assert browser.console() == [], "the page said something on the console"
    assert len(found["images"]) == len(FIGURES), found["images"]
    assert [image["alt"] for image in found["images"]] == FIGURES
    for image in found["images"]:
        assert image["complete"] and image["width"] > 0 and image["decoded"], image
    assert found["broken"] == [], "table of contents links without a target"
    assert found["toc"] == found["sections"] == ["#stages"] + [f"#stage-{s}" for s in SECTIONS]
    assert found["scrollWidth"] <= found["clientWidth"] <= WIDTH, "the page is wider than the 1400 px window"
    too_wide = [t for t in found["tables"] if t["scrollWidth"] > t["clientWidth"]]
    assert too_wide == [], "tables that do not fit at 1400 px"

    # The whole page at 1400 px, for a person to look at.
    shot = browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                        clip={"x": 0, "y": 0, "width": WIDTH, "height": found["height"], "scale": 1})
    png = base64.b64decode(shot["data"])
    (tmp_path / "report.png").write_bytes(png)
    from PIL import Image

    with Image.open(tmp_path / "report.png") as image:
        assert image.size[0] == WIDTH and image.size[1] > 900
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tmp_path / "report.png", SCREENSHOT)
    print(f"screenshot of the report: {SCREENSHOT}")

    # A narrow window: the page still does not scroll sideways (wide tables scroll inside their frame).
    narrow = _load(browser, url, 760)
    assert browser.console() == []
    assert narrow["scrollWidth"] <= narrow["clientWidth"], "the page is wider than a 760 px window"
