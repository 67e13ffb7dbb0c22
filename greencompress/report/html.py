"""report.html: one self-contained file (plots embedded as PNG), rendered from a RunReport."""

from __future__ import annotations

import base64
import re
from html import escape

from greencompress.measure.energy.carbon import carbon_per_million
from greencompress.measure.latency import shape_label, shape_words
from greencompress.report import plots
from greencompress.report.markdown import (
    carbon_legend,
    carbon_table,
    comparison_table,
    decision_lines,
    embedding_agreement_line,
    energy_legend,
    gate_lines,
    gpu_sentence,
    headline_comparisons,
    interval_cell,
    loading_lines,
    plain_findings,
    recommendation_note,
    recommendation_table,
    runtime_table,
    saving_phrase,
    stage_lines,
)
from greencompress.report.schema import Comparison, RunReport

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.headline { display: flex; gap: 1rem; flex-wrap: wrap; }
.decision { font-size: 1.15rem; margin: 0.3rem 0; }
pre.loading { background: #f6f8fa; border: 1px solid #ddd; padding: 0.5rem 0.75rem; overflow-x: auto; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: 0.75rem 1rem; min-width: 16rem; }
.card .big { font-size: 1.6rem; font-weight: 600; }
.method { font-size: 0.8rem; color: #555; }
.estimate { font-size: 0.95rem; font-weight: 600; color: #8a4b00; }
.note { background: #fff4d6; padding: 0.5rem 0.75rem; border-left: 4px solid #e0a800; margin: 0.5rem 0; }
figure { margin: 1rem 0; } figure img { max-width: 100%; }
"""


def _bold(text: str) -> str:
    """Markdown's **bold** in an already escaped sentence shared with report.md."""
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)


def render_html(report: RunReport) -> str:
    """The whole report.html: headline, per-artifact table, comparisons, plots, energy and carbon notes."""
    cpu = report.environment["cpu"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>greencompress report: {escape(report.name)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>greencompress report: {escape(report.name)}</h1>",
        *([] if report.complete else [f'<p class="note"><b>INCOMPLETE</b>: {escape(report.notes[-1])}</p>']),
        *[f'<p class="decision"><b>{_code(escape(line))}.</b></p>' for line in decision_lines(report)],
        *_loading(report),
        f"<p>Measured {escape(report.created_utc)} on <b>{escape(cpu['model'])}</b> "
        f"({cpu['logical_cores']} logical cores; flags: {escape(', '.join(cpu['flags']) or 'none detected')}), "
        f"{report.environment['threads']} threads. Model: {escape(str(report.provenance.get('description', '')))}. "
        f"Data: {escape(report.data)}.</p>",
        *([f"<p>{escape(line)}</p>"] if (line := embedding_agreement_line(report)) else []),
        *([f"<p>Models ran on {_bold(escape(gpu))}.</p>"] if (gpu := gpu_sentence(report.environment)) else []),
        '<section id="headline"><h2>What each technique bought, on its own runtime</h2><div class="headline">',
        *[_headline_card(report, comparison) for comparison in headline_comparisons(report)],
        "</div>",
        *[f'<p class="note">{escape(finding)}</p>' for finding in plain_findings(report)],
        "</section>",
        '<section id="artifacts"><h2>Artifacts</h2>',
        html_table(*_artifact_rows(report)),
        f'<p class="method">{escape(energy_legend(report))}</p></section>',
        '<section id="comparisons"><h2>Compressed vs baseline (same runtime, hardware and batch size)</h2>',
        html_table(*comparison_table(report))
        if report.comparisons
        else "<p>No pair shares a runtime and batch size.</p>",
        "</section>",
        *(
            []
            if (recommendation := recommendation_table(report)) is None
            else [
                '<section id="recommendation"><h2>Deployment recommendation</h2>',
                html_table(*recommendation),
                f'<p class="method">{escape(recommendation_note(report))}</p></section>',
            ]
        ),
        *(
            []
            if (runtimes := runtime_table(report)) is None
            else [
                '<section id="runtimes"><h2>The same model on each runtime (same hardware and batch size; energy: '
                f"{escape(report.energy_meter.method)})</h2>",
                html_table(*runtimes),
                "</section>",
            ]
        ),
        '<section id="stages"><h2>Stages</h2><ul>',
        *[f"<li>{escape(line)}</li>" for line in stage_lines(report)],
        "</ul></section>",
        '<section id="plots"><h2>Plots</h2>',
        *_figures(report),
        "</section>",
        '<section id="carbon"><h2>Carbon</h2>',
        html_table(*carbon_table(report)),
        f'<p class="method">{escape(carbon_legend(report))}</p></section>',
        *(
            [
                '<section id="gates"><h2>Quality gates</h2><ul>'
                + "".join(f"<li>{escape(line)}</li>" for line in gate_lines(report))
                + "</ul></section>"
            ]
            if report.gates
            else []
        ),
        '<section id="energy"><h2>Energy method</h2><ul>',
        *[f"<li>{escape(line)}</li>" for line in report.energy_meter.assumptions],
        f"<li>{escape(report.energy_meter_reason)}</li></ul></section>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _headline_card(report: RunReport, comparison: Comparison) -> str:
    by_name = {r.artifact.name: r for r in report.artifacts}
    shape = comparison.batch_size, comparison.sequence_length
    baseline = by_name[comparison.baseline].at_batch(*shape).energy
    candidate = by_name[comparison.candidate].at_batch(*shape).energy
    before = carbon_per_million(baseline.joules_per_inference, report.carbon).g_co2e_per_million
    after = carbon_per_million(candidate.joules_per_inference, report.carbon).g_co2e_per_million
    interval = comparison.joules_per_inference
    kind = "measured" if comparison.measured else "estimate: energy was not measured on this machine"
    quantity = "J" if comparison.measured else f"J (estimated from {report.energy_meter.proportional_to})"
    return (
        '<div class="card">'
        f"<div>{escape(comparison.candidate)} vs {escape(comparison.baseline)}, {shape_words(*shape)}</div>"
        f'<div class="big">{escape(saving_phrase(comparison, report.energy_meter.proportional_to))}</div>'
        + (
            f"<div>ratio {interval.ratio:.2f}x, 95% CI [{interval.low:.2f}, {interval.high:.2f}] "
            f"({escape(interval.method)})</div>"
            if interval
            else ""
        )
        + f"<div>{baseline.joules_per_inference:.4g} &rarr; {candidate.joules_per_inference:.4g} {quantity} per "
        f"inference</div>"
        f"<div>{before:.3g} g &rarr; {after:.3g} g CO2e per million inferences"
        f"{'' if comparison.measured else ' (estimated)'}</div>"
        f'<div class="{"method" if comparison.measured else "estimate"}">method: {escape(candidate.method)} ({kind}); '
        f"systematic band -{100 * candidate.uncertainty.low_fraction:.0f}%/"
        f"+{100 * candidate.uncertainty.high_fraction:.0f}%</div>"
        "</div>"
    )


def _artifact_rows(report: RunReport) -> tuple[list[str], list[list[str]]]:
    headers = [
        "artifact",
        "batch",
        "top-1",
        "p50 ms",
        "p99 ms",
        "items/s",
        f"J/inf ({report.energy_meter.method})",
        "95% CI",
        "size MB",
        "params",
        "MACs",
    ]
    rows = []
    for result in report.artifacts:
        artifact = result.artifact
        for bench in result.benchmarks:
            rows.append(
                [
                    artifact.name,
                    shape_label(*bench.latency.shape),
                    f"{100 * result.accuracy.top1:.2f}%" if result.accuracy else "n/a",
                    f"{bench.latency.p50_ms:.3f}",
                    f"{bench.latency.p99_ms:.3f}",
                    f"{bench.latency.throughput_per_s:.1f}",
                    f"{bench.joules_per_inference:.4g}",
                    interval_cell(bench.energy),
                    f"{artifact.size_bytes / 1e6:.2f}" if artifact.size_bytes else "-",
                    f"{artifact.params / 1e6:.2f} M",
                    f"{artifact.macs / 1e6:.1f} M",
                ]
            )
    return headers, rows


def _figures(report: RunReport) -> list[str]:
    # The smallest shape measured: batch 1 (and the shortest sequence) is what latency-bound services run.
    shape = min((b.latency.shape for r in report.artifacts for b in r.benchmarks), key=lambda s: (s[0], s[1] or 0))
    figures = [
        (
            "accuracy-vs-energy",
            f"Accuracy against energy per inference ({shape_words(*shape)})",
            plots.accuracy_vs_energy(report, *shape),
        ),
        ("latency", "Latency per batch (box: p25-p75, whiskers: p1-p99)", plots.latency_distribution(report)),
        (
            "energy-by-domain",
            f"Energy per inference by domain ({shape_words(*shape)})",
            plots.energy_by_domain(report, *shape),
        ),
        ("timeline", "Mean power of each benchmark window", plots.power_timeline(report)),
    ]
    html = []
    for name, caption, png in figures:
        if png is None:
            reason = {
                "accuracy-vs-energy": "no accuracy (synthetic data)",
                "latency": "no latency percentiles recorded",
            }.get(name, "the energy figures are estimates: there are no power readings to plot")
            html.append(f'<p class="method">{escape(caption)}: not drawn, {reason}.</p>')
            continue
        encoded = base64.b64encode(png).decode()
        html.append(
            f'<figure id="plot-{name}"><img alt="{escape(caption)}" src="data:image/png;base64,{encoded}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>"
        )
    return html


def html_table(headers: list[str], rows: list[list[str]]) -> str:
    """A table element with every cell escaped."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _code(escaped: str) -> str:
    """`inline code` of an escaped line as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def _loading(report: RunReport) -> list[str]:
    """How to load the deployed file: the report's paragraphs and code blocks (markdown.loading_lines) as HTML."""
    parts, code = [], None
    for line in loading_lines(report):
        if line.startswith("```"):
            if code is None:
                code = []
            else:
                parts.append(f'<pre class="loading">{escape(chr(10).join(code))}</pre>')
                code = None
        elif code is not None:
            code.append(line)
        elif line:
            parts.append(f"<p>{_code(escape(line))}</p>")
    return parts
