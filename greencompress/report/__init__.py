"""RunReport and its renderings: report.json (the interface), report.md and report.html (for people)."""

from __future__ import annotations

from pathlib import Path

from greencompress.core.files import write_text_atomic
from greencompress.report.schema import RunReport, load_report

__all__ = ["RunReport", "load_report", "write_reports"]


def write_reports(report: RunReport, run_dir: Path) -> None:
    """Write report.json, report.md and report.html into `run_dir`, each atomically."""
    from greencompress.report.html import render_html
    from greencompress.report.markdown import render_markdown

    report.write_json(run_dir / "report.json")
    write_text_atomic(run_dir / "report.md", render_markdown(report))
    write_text_atomic(run_dir / "report.html", render_html(report))
