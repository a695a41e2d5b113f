"""The Usage and Health pages' charts in real headless Chromium (launched as
test_browser.py launches it, with its fixtures and helpers): each canvas was drawn by
the vendored Chart.js (a chart object with the labels and figures of the API, and
pixels that differ from a blank canvas of the same size), each data table holds the
API's figures, and the console stays empty (no CSP violation: Chart.js adds no inline
style or script). Screenshots are saved among the test artifacts."""

# ruff: noqa: F811  (the tests take test_browser's fixtures ``browser`` and ``tab`` by name)
from __future__ import annotations

from typing import Any

import pytest

pytest.register_assert_rewrite("served", "test_browser", "test_usage")  # before the imports: plugins (below)
from served import Served  # noqa: E402
from test_browser import Tab, api, browser, tab  # noqa: E402, F401  (fixtures used by name)
from test_usage import HOSTILE_MODEL, usage_log, usage_server  # noqa: E402, F401

#: The logs and servers (session-wide fixtures, shared with the other web tests).
pytest_plugins = ["served"]

#: For each canvas: whether Chart.js made a chart of it, its labels and datasets, and
#: whether its pixels differ from a blank canvas of the same size.
DRAWN = """() => Array.from(document.querySelectorAll("canvas[data-chart]")).map(canvas => {
  const chart = Chart.getChart(canvas);
  const blank = document.createElement("canvas");
  blank.width = canvas.width; blank.height = canvas.height;
  return {id: canvas.id, chart: !!chart, width: canvas.width, height: canvas.height,
          labels: chart ? chart.data.labels : null,
          datasets: chart ? chart.data.datasets.map(d => ({label: d.label, data: d.data})) : null,
          drawn: canvas.toDataURL() !== blank.toDataURL()};
})"""


def table(tab: Tab, chart_id: str) -> list[list[str]]:
    """The rows of a chart's data table, as the cells' texts (the table is in a closed
    ``<details>``: read from the DOM, not from what is shown)."""
    return tab.page.evaluate(f"""() => Array.from(document.querySelectorAll('table[data-for="{chart_id}"] tbody tr'))
        .map(tr => Array.from(tr.children).map(cell => cell.textContent))""")


def charts_of(tab: Tab) -> dict[str, dict[str, Any]]:
    """Every canvas of the page (see :data:`DRAWN`), by id, each one drawn."""
    tab.page.wait_for_function("() => typeof Chart !== 'undefined' && Array.from("
                               "document.querySelectorAll('canvas[data-chart]')).every(c => Chart.getChart(c))")
    found = {entry["id"]: entry for entry in tab.page.evaluate(DRAWN)}
    for entry in found.values():
        assert entry["chart"] and entry["drawn"] and entry["width"] > 0 and entry["height"] > 0, entry
    return found


@pytest.mark.parametrize("which", ["demo", "shearwater", "usage"])
def test_the_usage_charts(tab: Tab, which: str, request: pytest.FixtureRequest) -> None:
    """``/usage`` on the demo's log, the Shearwater recording (no request: no chart) and
    test_usage's log of several models over three days (one model named with markup):
    the totals are ``/api/usage``'s; each chart is drawn with the API's labels and
    figures and its table holds the same; the markup ran nowhere."""
    server: Served = request.getfixturevalue(f"{which}_server")
    tab.sign_in(server)
    usage = api(server, "/api/usage")
    tab.page.goto(f"{server.base}/usage")
    assert tab.page.locator("#total-requests").text_content() == str(usage["totals"]["requests"])
    if not usage["totals"]["requests"]:
        assert tab.page.locator("#no-usage").count() == 1 and tab.page.locator("canvas").count() == 0
        tab.shot(f"usage-{which}")
        tab.assert_quiet()
        return
    charts = charts_of(tab)
    assert set(charts) == {"usage-models-tokens", "usage-models-cost", "usage-days-tokens", "usage-days-cost",
                           "usage-sessions-cost"}
    models = [m["model"] if m["model"] is not None else "(no model)" for m in usage["models"]]
    assert charts["usage-models-cost"]["labels"] == models
    assert charts["usage-models-cost"]["datasets"][0]["data"] == [m["cost_usd"] for m in usage["models"]]
    assert charts["usage-days-tokens"]["labels"] == [d["day"] for d in usage["days"]]
    assert [d["data"] for d in charts["usage-days-tokens"]["datasets"]] == [
        [d["input_tokens"] for d in usage["days"]], [d["output_tokens"] for d in usage["days"]]]
    assert charts["usage-sessions-cost"]["labels"] == [s["id"] for s in usage["sessions"]]
    rows = table(tab, "usage-models-tokens")
    assert [r[0] for r in rows] == models
    assert [[int(r[1]), int(r[2]), int(r[3]), float(r[4])] for r in rows] == [
        [m["requests"], m["input_tokens"], m["output_tokens"], m["cost_usd"]] for m in usage["models"]]
    rows = table(tab, "usage-days-tokens")
    assert [[r[0], int(r[1]), int(r[2]), int(r[3]), float(r[4])] for r in rows] == [
        [d["day"], d["requests"], d["input_tokens"], d["output_tokens"], d["cost_usd"]] for d in usage["days"]]
    rows = table(tab, "usage-sessions-cost")
    assert [[r[0], int(r[1]), float(r[4])] for r in rows] == [
        [s["id"], s["requests"], s["cost_usd"]] for s in usage["sessions"]]
    tab.page.locator('#usage-models-tokens-figure details summary').click()  # the table opens
    assert tab.page.locator('table[data-for="usage-models-tokens"]').is_visible()
    assert tab.page.evaluate("typeof window.pwned") == "undefined"
    if which == "usage":
        assert HOSTILE_MODEL in models and tab.page.locator("figure.chart script:not([type])").count() == 0
    tab.shot(f"usage-{which}")
    tab.assert_quiet()


@pytest.mark.parametrize("which", ["demo", "shearwater", "usage"])
def test_the_health_charts(tab: Tab, which: str, request: pytest.FixtureRequest) -> None:
    """The health page on the demo's log, the Shearwater recording and test_usage's
    recorded log with gaps (no recorder runs: 503, as ``/health``): the figures are
    ``/api/health/log``'s; the disk chart is drawn with its parts' bytes, the gaps chart
    with each publisher's missing messages per bucket, the drops chart with the
    messages dropped, and their tables say the same."""
    server: Served = request.getfixturevalue(f"{which}_server")
    tab.sign_in(server)
    log = api(server, "/api/health/log")
    response = tab.page.goto(f"{server.base}/status")
    assert response.status == 503
    assert "not recording" in tab.page.locator("#health-verdict").text_content()
    assert tab.page.locator("#fig-records").text_content() == str(log["records"])
    assert tab.page.locator("#fig-missing").text_content() == str(log["gaps"]["missing"])
    assert tab.page.locator("#fig-disk").get_attribute("data-value") == str(log["disk"]["total"]["bytes"])
    charts = charts_of(tab)
    assert ("health-gaps" in charts) == bool(log["gap_series"])
    assert ("health-drops" in charts) == bool(log["drop_series"])
    parts = ["events", "checkpoints", "index", "recovery", "other"] + (["archive"] if log["disk"]["archive"] else [])
    assert charts["health-disk"]["labels"] == parts
    assert charts["health-disk"]["datasets"][0]["data"] == [log["disk"][p]["bytes"] for p in parts]
    assert [[r[0], int(r[1])] for r in table(tab, "health-disk")] == [[p, log["disk"][p]["bytes"]] for p in parts]
    if log["gap_series"]:
        buckets = sorted({row["bucket"] for row in log["gap_series"]})
        assert charts["health-gaps"]["labels"] == buckets
        missing = {(row["bucket"], row["publisher"]): row["missing"] for row in log["gap_series"]}
        assert {d["label"]: d["data"] for d in charts["health-gaps"]["datasets"]} == {
            p: [missing.get((b, p), 0) for b in buckets] for p in {row["publisher"] for row in log["gap_series"]}}
        assert [[r[0], r[1], int(r[2]), int(r[3])] for r in table(tab, "health-gaps")] == [
            [row["bucket"], row["publisher"], row["gaps"], row["missing"]] for row in log["gap_series"]]
    if log["drop_series"]:
        assert charts["health-drops"]["labels"] == [row["bucket"] for row in log["drop_series"]]
        assert [[r[0], int(r[1]), int(r[2])] for r in table(tab, "health-drops")] == [
            [row["bucket"], row["records"], row["messages"]] for row in log["drop_series"]]
    tab.shot(f"health-{which}")
    # The page answers 503 (the truth of /health), which Chromium reports as a failed load.
    assert all("503" in line for line in tab.console), tab.console
