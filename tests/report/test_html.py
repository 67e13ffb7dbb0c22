"""report.html: self-contained, with headline, tables and real plots; re-rendered from report.json."""

from __future__ import annotations

import base64
import json
import re

import pytest

from greencompress.core.errors import GreencompressError
from greencompress.report import load_report, write_reports
from greencompress.report.plots import pareto_front


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_html_is_self_contained_with_headline_table_and_plots(tiny_run):
    run_dir, report = tiny_run
    html = (run_dir / "report.html").read_text()
    assert 'id="headline"' in html and re.search(r"(less|MORE) CPU time|no CPU time difference", html)
    assert "energy saved" not in html and "less energy" not in html  # the estimate meter measured CPU time only
    assert "onnxruntime-int8 vs onnxruntime-fp32, batch 1" in html
    assert "method: estimate (estimate: energy was not measured on this machine)" in html
    pngs = embedded_pngs(html)
    assert len(pngs) == 3  # accuracy vs energy, latency, energy by domain (no timeline for an estimate)
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000 for png in pngs)
    assert "there are no power readings to plot" in html
    assert not re.search(r'(src|href)="(http|file|/)', html)  # nothing outside the file


def test_report_json_round_trips_and_re_renders(tiny_run, tmp_path):
    run_dir, report = tiny_run
    loaded = load_report(run_dir)
    as_json = lambda r: json.loads(json.dumps(r.to_dict()))  # noqa: E731
    assert as_json(loaded) == as_json(report)
    write_reports(loaded, tmp_path)
    assert (tmp_path / "report.md").read_text() == (run_dir / "report.md").read_text()
    assert (tmp_path / "report.html").read_text().count("data:image/png") == 3


def test_other_major_schema_versions_fail_clearly(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    data = json.loads((run_dir / "report.json").read_text())
    data["schema_version"] = "2.0"
    (tmp_path / "future.json").write_text(json.dumps(data))
    with pytest.raises(
        GreencompressError, match="schema version 2.0 is not readable by this greencompress, which reads 1.x"
    ):
        load_report(tmp_path / "future.json")
    data["schema_version"] = "1.7"  # a later minor version: only added fields, still loads
    data["a_field_from_the_future"] = 1
    (tmp_path / "minor.json").write_text(json.dumps(data))
    assert load_report(tmp_path / "minor.json").name == "tiny"
    del data["artifacts"][0]["latency"]
    (tmp_path / "damaged.json").write_text(json.dumps(data))
    with pytest.raises(GreencompressError, match="incomplete or damaged"):
        load_report(tmp_path / "damaged.json")


def test_pareto_front_keeps_points_nothing_beats():
    points = [(1.0, 90.0), (2.0, 95.0), (3.0, 94.0), (0.5, 80.0), (2.0, 91.0)]
    assert pareto_front(points) == [(0.5, 80.0), (1.0, 90.0), (2.0, 95.0)]


def test_pareto_front_of_a_report_holds_exactly_the_non_dominated_artifacts():
    from greencompress.report.plots import domain_bars
    from tests.report.test_report import make_report, result

    report = make_report(
        [
            result("torch-fp32", "torch", "fp32", 20.0, 1.811, top1=0.9348),
            result("onnxruntime-fp32", "onnxruntime", "fp32", 15.0, 0.90, top1=0.9348),
            result("onnxruntime-int8", "onnxruntime", "int8", 4.0, 0.45, top1=0.9356),  # cheaper and more accurate
            result("openvino-int8", "openvino", "int8", 3.0, 0.40, top1=0.9300),  # cheapest, less accurate
        ]
    )
    points = [(r.at_batch(1).joules_per_inference, 100 * r.accuracy.top1) for r in report.artifacts]
    assert pareto_front(points) == [(0.40, 93.0), (0.45, 93.56)]
    assert pareto_front([(1.0, 90.0), (1.0, 90.0)]) == [(1.0, 90.0)]  # equal points: neither dominates
    bars = domain_bars(report, 1)
    for r in report.artifacts:  # each bar adds up to the figure in the table
        assert sum(bars[r.artifact.name].values()) == pytest.approx(r.at_batch(1).joules_per_inference)
