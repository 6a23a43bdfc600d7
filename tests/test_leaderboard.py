"""The leaderboard: the score formula, the three formats agreeing on ranking and figures, a
hostile method name shown as text, the CI workflow validated against GitHub's schema, and
the HTML page rendered, sorted and photographed in headless Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.orchestration.cli import main
from harness.plugins import METHODS
from leaderboard.score import components, score
from methods.ga import GradientAscentGDR

ROOT = Path(__file__).parent.parent
XSS = "<script>alert(1)</script>"


def test_score_formula():
    target = {"verbmem_f": 100.0, "knowmem_f": 80.0, "knowmem_r": 80.0}
    perfect = components({"verbmem_f": 0.0, "knowmem_f": 0.0, "knowmem_r": 80.0, "privleak": 0.0}, target)
    assert perfect == {"forget": 1.0, "privacy": 1.0, "utility": 1.0} and score(perfect) == pytest.approx(100)
    untouched = components({"verbmem_f": 100.0, "knowmem_f": 80.0, "knowmem_r": 80.0, "privleak": -100.0}, target)
    assert score(untouched) == 0.0
    collapsed = components({"verbmem_f": 0.0, "knowmem_f": 0.0, "knowmem_r": 0.0, "privleak": 30.0}, target)
    assert score(collapsed) == 0.0
    half = components({"verbmem_f": 50.0, "knowmem_f": 40.0, "knowmem_r": 40.0, "privleak": 50.0}, target)
    assert score(half) == pytest.approx(50)


def _md_ranking(md: str) -> list[tuple[str, str, str]]:
    section = md.split("## muse_tiny", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| ") and line[2:3].isdigit()]
    return [tuple(c.strip() for c in line.strip("|").split("|")[1:4]) for line in rows]


def _html_ranking(page: str) -> list[tuple[str, str, str]]:
    table = re.search(r'data-table="muse_tiny/ranking">(.*?)</table>', page, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>", 1)[1], re.S)
    return [tuple(re.findall(r"<td[^>]*>(.*?)</td>", r)[1:4]) for r in rows]


def test_formats_agree_on_ranking_and_figures(small_run):
    data = json.loads((small_run / "leaderboard.json").read_text())
    assert data["schema"]["version"] == 1 and data["formula"]["name"] == "robust score"
    board = data["tasks"]["muse_tiny"]
    assert board["ranking_quantizers"] == ["rtn4"] and board["quantizers"] == ["bf16", "rtn4"]
    from leaderboard.tables import fmt

    expected = [(e["method"], e["mode"], fmt(e["score"])) for e in board["rows"]]
    assert len(expected) == 2 and [e["rank"] for e in board["rows"]] == [1, 2]
    assert _md_ranking((small_run / "leaderboard.md").read_text()) == expected
    page = (small_run / "leaderboard.html").read_text()
    assert _html_ranking(page) == expected
    assert "plots/muse_tiny.png" in (small_run / "leaderboard.md").read_text()
    assert "data:image/png;base64," in page and "http://" not in page and "https://" not in page
    assert {r["model"] for r in board["references"]} == {"target", "retrain"}
    e = board["rows"][0]
    kr = e["metrics"]["rtn4"]["knowledge_retained"] - e["metrics"]["bf16"]["knowledge_retained"]
    assert e["gap"]["rtn4"] == pytest.approx(kr)
    assert main(["leaderboard", str(small_run), "--format", "md,json", "--rank-quant", "bf16"]) == 0
    assert main(["leaderboard", str(small_run), "--rank-quant", "gptq4"]) == 2
    assert main(["leaderboard", str(small_run), "--format", "pdf"]) == 2
    assert main(["leaderboard", str(small_run)]) == 0  # back to the default ranking


@pytest.fixture(scope="module")
def xss_run(tiny_task, tmp_path_factory):
    """A real run of a method registered under a hostile name."""
    class Hostile(GradientAscentGDR):
        """GA+GDR under a name that is an HTML script tag."""

        name = XSS
        mode_defaults = {"lora": {"epochs": 1}}

    METHODS.add(XSS, Hostile)
    out = tmp_path_factory.mktemp("runs") / "xss"
    try:
        assert main(["run", "--methods", XSS, "--modes", "lora", "--quant", "bf16,rtn4", "--out", str(out)]) == 0
    finally:
        METHODS.unregister(XSS)
    return out


def test_hostile_method_name_shows_as_text(xss_run):
    page = (xss_run / "leaderboard.html").read_text()
    assert XSS not in page and html.escape(XSS) in page
    md = (xss_run / "leaderboard.md").read_text()
    assert XSS not in md and "&lt;script&gt;" in md
    data = json.loads((xss_run / "leaderboard.json").read_text())
    assert data["tasks"]["muse_tiny"]["rows"][0]["method"] == XSS  # the data itself is untouched


def test_ci_workflow_is_valid():
    workflow = ROOT / ".github" / "workflows" / "leaderboard.yml"
    checker = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    if not Path(checker).exists():
        pytest.skip("check-jsonschema is not installed (pip install -e '.[dev]')")
    done = subprocess.run([checker, "--builtin-schema", "vendor.github-workflows", str(workflow)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    import yaml

    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    uses = [s.get("uses", "") for job in jobs.values() for s in job.get("steps", [])]
    assert any(u.startswith("actions/deploy-pages") for u in uses)
    assert any(u.startswith("actions/upload-artifact") for u in uses)
    assert "GITHUB_STEP_SUMMARY" in workflow.read_text() and jobs["summary"]["needs"] == "run"
    assert any("harness run" in s.get("run", "") for s in jobs["run"]["steps"])


def test_html_in_headless_chromium(xss_run, small_run, tmp_path):
    """Open the page, check tables and plot render, sort by clicking, no script runs, screenshot."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("Debian packages chromium and chromium-driver are not installed (.ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
    try:
        driver.get((small_run / "leaderboard.html").resolve().as_uri())
        tables = driver.find_elements(By.CSS_SELECTOR, "table.sortable")
        assert len(tables) == 3 and all(t.is_displayed() for t in tables)
        img = driver.find_element(By.TAG_NAME, "img")
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 100
        detail = tables[1]  # every (method, mode, quantizer): 4 rows here
        col = [h.text for h in detail.find_elements(By.TAG_NAME, "th")].index("Utility ↑")

        def values():
            return [float(r.find_elements(By.TAG_NAME, "td")[col].text)
                    for r in detail.find_elements(By.CSS_SELECTOR, "tbody tr")]

        original = values()
        assert len(original) == 4 and len(set(original)) > 1
        detail.find_elements(By.TAG_NAME, "th")[col].click()
        assert values() == sorted(original)
        detail.find_elements(By.TAG_NAME, "th")[col].click()
        assert values() == sorted(original, reverse=True)
        driver.save_screenshot(str(tmp_path / "leaderboard.png"))
        assert (tmp_path / "leaderboard.png").stat().st_size > 10_000
        print(f"screenshot: {tmp_path / 'leaderboard.png'}")

        driver.get((xss_run / "leaderboard.html").resolve().as_uri())
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text  # noqa: B018  (the method name must not run)
        cell = driver.find_element(By.CSS_SELECTOR, "table.sortable tbody tr td:nth-child(2)")
        assert cell.text == XSS
    finally:
        driver.quit()


def _synthetic_rows(reference: str | None = "bf16") -> list[dict]:
    """A hand-made task: the target, GA (full) that gptq4 brings back, NPO (LoRA) that holds."""
    def row(method, mode, quant, kr, utility, bits=None):
        metrics = {"verbmem_f": 0.5 * kr, "knowmem_f": 0.8 * kr, "privleak": -10.0, "knowmem_r": utility,
                   "knowledge_retained": kr}
        return {"task": "t", "method": method, "mode": mode, "quant": quant, "baseline": mode is None,
                "reference": reference, "status": "done", "quantization": {"bits": bits}, "metrics": metrics}

    return [row("target", None, "bf16", 100.0, 80.0), row("target", None, "gptq4", 90.0, 70.0, 4),
            row("ga", "full", "bf16", 20.0, 60.0), row("ga", "full", "gptq4", 65.0, 50.0, 4),
            row("npo", "lora", "bf16", 30.0, 72.0), row("npo", "lora", "gptq4", 31.0, 71.0, 4)]


def test_answer_names_the_top_the_largest_gap_and_the_utility_losses():
    from leaderboard.answer import findings
    from leaderboard.score import build_task

    board = build_task(_synthetic_rows())
    assert board["reference"] == "bf16" and board["quantizers"] == ["bf16", "gptq4"]
    assert {(e["method"], round(e["gap"]["gptq4"], 6)) for e in board["rows"]} == {("ga", 45.0), ("npo", 1.0)}
    said = findings(board)
    assert said[0].startswith("top by robust score (worst of gptq4): 1. npo/lora")
    assert "largest quantization gap: ga/full @ gptq4, +45.0 points of Knowledge retained (20.0 at bf16 → 65.0 after gptq4)" in said[1]
    assert "largest Utility loss from quantization: ga/full @ gptq4, -10.0 points (60.0 at bf16 → 50.0)" in said[2]
    assert "largest Utility loss from unlearning: ga/full, -20.0 points against the target (80.0 → 60.0" in said[3]


def test_no_utility_loss_is_said_in_words_not_as_minus_zero():
    from leaderboard.answer import findings
    from leaderboard.score import build_task

    rows = _synthetic_rows()
    for r in rows:
        if r["quant"] == "gptq4":
            r["metrics"]["knowmem_r"] = next(x for x in rows if x["method"] == r["method"] and x["quant"] == "bf16")[
                "metrics"]["knowmem_r"] + 0.01
    said = " ".join(findings(build_task(rows)))
    assert "no cell lost Utility to quantization" in said and "-0.0" not in said


def test_a_run_without_reference_says_so_and_has_no_gap():
    from leaderboard.answer import findings
    from leaderboard.score import build_task

    rows = [r for r in _synthetic_rows(reference=None) if r["quant"] == "gptq4"]
    board = build_task(rows)
    assert board["reference"] is None and board["reference_quantizer"] == "gptq4"
    assert all(g is None for e in board["rows"] for g in e["gap"].values()) or all(not e["gap"] for e in board["rows"])
    assert any("not measured" in s and "--reference none" in s for s in findings(board))
    # a named reference other than bf16 is the gap's baseline and comes first
    named = build_task([dict(r, reference="gptq4") for r in _synthetic_rows()])
    assert named["quantizers"][0] == "gptq4" and round(named["rows"][0]["gap"]["bf16"], 6) in (-45.0, -1.0)


_NUMBER = re.compile(r"^[+-]?\d+(?:\.(\d+))?(e[+-]\d+)?$")


def _shape(cell: str) -> tuple[int, bool] | None:
    """(decimals, scientific) of a number written in a cell; None for text and '–'."""
    m = _NUMBER.match(cell)
    return (len(m.group(1) or ""), bool(m.group(2))) if m else None


def test_every_numeric_column_has_one_format(small_run):
    """In every table of leaderboard.md, all numbers of a column are written the same way (same
    decimals, same notation), and a gap column signs every number."""
    md = (small_run / "leaderboard.md").read_text()
    blocks = re.findall(r"((?:^\|.*\|\n)+)", md, re.M)
    assert len(blocks) >= 3
    checked = 0
    for block in blocks:
        lines = block.strip().splitlines()
        header = [c.strip() for c in lines[0].strip("|").split("|")]
        cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
        for i, name in enumerate(header):
            column = [row[i] for row in cells]
            shapes = {_shape(c) for c in column} - {None}
            assert len(shapes) <= 1, f"column {name!r} mixes formats: {column}"
            if "gap" in name:
                assert all(c == "–" or c[0] in "+-" for c in column), f"{name}: {column}"
            checked += bool(shapes)
    assert checked >= 10
