"""report.md: the before/after tables a person pastes into a pull request, and the words around them.

`artifact_table` and `comparison_table` return plain rows, so the terminal summary shows the same figures.
"""

from __future__ import annotations

from pathlib import Path

from greencompress.measure.energy.carbon import carbon_per_million
from greencompress.measure.latency import shape_label, shape_words
from greencompress.measure.load import BUSY_SHARE
from greencompress.measure.stats import RatioInterval
from greencompress.report.recommend import ranking_figure, versus
from greencompress.report.schema import Comparison, RunReport
from greencompress.runtimes import RUNTIMES

Table = tuple[list[str], list[list[str]]]


def artifact_table(report: RunReport, compact: bool = False) -> Table:
    """One row per artifact and batch size: accuracy, size, latency, throughput and joules per inference.

    `compact` keeps the columns that fit an 80-column terminal; report.md has them all.
    """
    headers = [
        "artifact",
        "batch",
        "top-1",
        "top-5",
        "size MB",
        "p50 ms",
        "p99 ms",
        "items/s",
        f"J/inf ({report.energy_meter.method})",
        "95% CI",
        "active J/inf",
    ]
    rows = []
    for result in report.artifacts:
        artifact, accuracy = result.artifact, result.accuracy
        for bench in result.benchmarks:
            rows.append(
                [
                    artifact.name,
                    shape_label(*bench.latency.shape),
                    _percent(accuracy.top1) if accuracy else "n/a",
                    _percent(accuracy.top5) if accuracy else "n/a",
                    f"{artifact.size_bytes / 1e6:.2f}" if artifact.size_bytes else "-",
                    *benchmark_cells(bench),
                ]
            )
    if compact:
        keep = [0, 1, 2, 4, 5, 8, 9]
        headers, rows = [headers[i] for i in keep], [[row[i] for i in keep] for row in rows]
    return headers, rows


def benchmark_cells(bench) -> list[str]:
    """p50 ms, p99 ms, items/s, J/inf, its 95% CI (and "noisy"), active J/inf: one Benchmark as table cells."""
    latency, energy = bench.latency, bench.energy
    throughput = f"{latency.throughput_per_s:.1f}" + (
        f" ({latency.tokens_per_s:.0f} tok/s)" if latency.tokens_per_s else ""
    )
    return [
        f"{latency.p50_ms:.3f}",
        f"{latency.p99_ms:.3f}",
        throughput,
        f"{energy.joules_per_inference:.4g}",
        interval_cell(energy),
        active_cell(energy),
    ]


def active_cell(energy) -> str:
    """Active J/inf; where total minus idle comes out at or below zero, the model added less than idle power varies."""
    if energy.active_joules_per_inference <= 0:
        return "below idle noise"
    return f"{energy.active_joules_per_inference:.4g}"


def interval_cell(energy) -> str:
    """`+-4.2%`, marked `noisy` past the target and `busy 3/10` when windows ran on a busy machine."""
    return (
        f"+-{100 * energy.relative_ci95:.1f}%"
        + (" noisy" if energy.noisy else "")
        + (f" busy {energy.busy_windows}/{energy.windows}" if energy.busy_windows else "")
    )


def carbon_table(report: RunReport) -> Table:
    """Energy, emissions and cost of a million inferences, per artifact and batch size."""
    settings = report.carbon
    tokens = any(b.latency.sequence_length for r in report.artifacts for b in r.benchmarks)
    # kWh per million inferences is Wh per 1,000: AI Energy Score's unit, which transformer users compare against.
    headers = ["artifact", "batch", "kWh / M inferences" + (" (= Wh / 1k)" if tokens else ""), "g CO2e / M inferences"]
    if settings.price_per_kwh is not None:
        headers.append(f"{settings.currency} / M inferences")
    rows = []
    for result in report.artifacts:
        for bench in result.benchmarks:
            per_million = carbon_per_million(bench.joules_per_inference, settings)
            row = [
                result.artifact.name,
                shape_label(*bench.latency.shape),
                f"{per_million.kwh_per_million:.4g}",
                f"{per_million.g_co2e_per_million:.4g}",
            ]
            if per_million.cost_per_million is not None:
                row.append(f"{per_million.cost_per_million:.4g}")
            rows.append(row)
    return headers, rows


def carbon_legend(report: RunReport) -> str:
    """Where the carbon figures come from: grid intensity with its source and year, and the PUE used."""
    settings, intensity = report.carbon, report.carbon.intensity
    year = f", {intensity.year}" if intensity.year else ""
    pue = f"PUE {settings.pue:g}" + (
        " (default: IT energy only, no data-centre overhead)" if settings.pue == 1.0 else ""
    )
    price = f"; price {settings.price_per_kwh:g} {settings.currency}/kWh" if settings.price_per_kwh is not None else ""
    return (
        f"Grid intensity {intensity.g_co2e_per_kwh:g} g CO2e/kWh for {intensity.name} ({intensity.key}{year}; "
        f"source: {intensity.source}); {pue}{price}. Figures inherit the energy method "
        f"({report.energy_meter.method}) and its uncertainty."
    )


def energy_legend(report: RunReport) -> str:
    """The line that must stand beside every energy figure: method, systematic band, idle power subtracted."""
    meter, idle = report.energy_meter, report.idle
    band = report.artifacts[0].benchmarks[0].energy.uncertainty if report.artifacts else None
    kind = "measured" if meter.measured else "ESTIMATED, not measured"
    band_text = f"systematic band -{100 * band.low_fraction:.0f}%/+{100 * band.high_fraction:.0f}%" if band else ""
    idle_text = "; ".join(
        f"{check.when} {check.total_w:.3g} W +-{check.ci95_w:.2g}" for check in report.idle_checks or (idle,)
    )
    return (
        f"Energy method: {meter.method} ({kind}); {band_text}; 95% CI over windows; ratios: paired per "
        f"interleaved round; active = total - idle power x time, idle power {idle_text}."
    )


def energy_ratio_label(report: RunReport) -> str:
    """What an energy ratio is a ratio of, in this report."""
    return "J/inference" if report.energy_meter.measured else f"{report.energy_meter.proportional_to} (energy estimate)"


def comparison_table(report: RunReport) -> Table:
    """Compressed vs baseline on the same runtime and batch size: ratios below 1 are savings, with 95% intervals."""
    measured = report.energy_meter.measured
    headers = [
        "candidate vs baseline",
        "batch",
        "p50 latency [95% CI]",
        f"{energy_ratio_label(report)} [95% CI]",
        *(["active J/inference [95% CI]"] if measured else []),
        "size",
        "top-1",
    ]
    rows = []
    for c in report.comparisons:
        rows.append(
            [
                f"{_short(c.candidate, c.runtime)} vs {_short(c.baseline, c.runtime)} on {c.runtime}",
                shape_label(c.batch_size, c.sequence_length),
                ratio_cell(c.latency_p50, c.latency_p50_ratio),
                ratio_cell(c.joules_per_inference, c.joules_per_inference_ratio),
                *([ratio_cell(c.active_joules_per_inference, None)] if measured else []),
                f"{c.size_ratio:.2f}x" if c.size_ratio is not None else "-",
                f"{c.top1_delta_points:+.2f} pt" if c.top1_delta_points is not None else "n/a",
            ]
        )
    return headers, rows


def ratio_cell(interval: RatioInterval | None, overall_ratio: float | None) -> str:
    """`0.43x [0.41, 0.45] (57% less)`, or `within noise` when the interval holds 1."""
    if interval is None:
        return f"{overall_ratio:.2f}x (no interval)" if overall_ratio is not None else "n/a"
    return bracketed(interval) + (" within noise" if interval.within_noise else f" ({_change(interval.ratio)})")


def bracketed(interval: RatioInterval) -> str:
    """`0.43x [0.41, 0.45]`: a paired ratio and its 95% interval."""
    return f"{interval.ratio:.2f}x [{interval.low:.2f}, {interval.high:.2f}]"


def saving_phrase(c: Comparison, estimated_from: str = "CPU time") -> str:
    """`57% less energy` where energy was measured, `57% less CPU time` where it was estimated from CPU time (the
    meter's `proportional_to`), or no difference."""
    interval = c.joules_per_inference
    what = "energy" if c.measured else estimated_from
    if interval is not None and interval.within_noise:
        return f"no {what} difference resolved (within noise)"
    ratio = interval.ratio if interval else c.joules_per_inference_ratio
    return f"{_change(ratio).replace('more', 'MORE')} {what}"


def headline(c: Comparison, estimated_from: str = "CPU time") -> str:
    """One comparison's saving in a sentence, with its interval and, for an estimate, what was not measured."""
    interval = c.joules_per_inference
    bounds = f" (ratio {interval.ratio:.2f}x, 95% CI [{interval.low:.2f}, {interval.high:.2f}])" if interval else ""
    suffix = "" if c.measured else f"; energy was not measured on this machine: {c.energy_method}"
    return (
        f"{_short(c.candidate, c.runtime)} vs {_short(c.baseline, c.runtime)} on {c.runtime}, "
        f"{shape_words(c.batch_size, c.sequence_length)}: {saving_phrase(c, estimated_from)}{bounds}{suffix}"
    )


def decision_line(c: Comparison, estimated_from: str = "CPU time", folder: str | None = None) -> str:
    """The answer a user came for, at one batch size: what to deploy (and the folder that holds it), and what it saves
    against the model they gave."""
    if c.candidate == c.baseline:
        return (
            f"Keep your model as given ({c.baseline}) at {shape_words(c.batch_size, c.sequence_length)}: nothing "
            f"within the budget ranks above it"
        )
    what = "energy" if c.measured else f"{estimated_from} (energy estimate: not measured here)"
    facts = [
        f"{_interval_text(c.latency_p50, c.latency_p50_ratio)} the p50 latency",
        f"{_interval_text(c.joules_per_inference, c.joules_per_inference_ratio)} the {what}",
    ]
    tail = [
        f"{c.top1_delta_points:+.2f} pt top-1" if c.top1_delta_points is not None else "top-1 not measured",
        f"{c.size_ratio:.2f}x size" if c.size_ratio is not None else "size not comparable",
    ]
    where = f" (`{folder}/`)" if folder else ""
    return (
        f"Deploy {c.candidate}{where} at {shape_words(c.batch_size, c.sequence_length)}: {' and '.join(facts)} of "
        f"your model as given ({c.baseline}), {', '.join(tail)}"
    )


def deploy_folder(report: RunReport, artifact: str) -> str | None:
    """The deployable folder of an artifact's file (pipeline/deploy.py), or None (a PyTorch model, an older report)."""
    result = next((r for r in report.artifacts if r.artifact.name == artifact), None)
    if result is None or result.artifact.path is None:
        return None
    return report.deploy_folders.get(Path(result.artifact.path).name)


def loading_lines(report: RunReport) -> list[str]:
    """How to load the file the first decision deploys, with the libraries its users have (the task's snippet)."""
    from greencompress.models.tasks import task_named, task_names

    decisions = report.decisions
    chosen = decisions[0].candidate if decisions else None
    folder = deploy_folder(report, chosen) if chosen else None
    task = (report.recipe.get("model") or {}).get("task")
    if folder is None or task not in task_names():
        return []
    lines = [
        f"Load it: `{folder}/onnx/model.onnx` with what it needs beside it (its README says what it holds; "
        f"paths from the run folder):",
        "",
        "```python",
        task_named(task).loading_snippet(folder),
        "```",
    ]
    artifact = next(r.artifact for r in report.artifacts if r.artifact.name == chosen)
    runtime = RUNTIMES.get(artifact.runtime) if artifact.runtime in RUNTIMES else None
    if runtime is not None and runtime.loading is not None:
        lines += [
            "",
            f"It was measured on {artifact.runtime} ({artifact.precision}); there, open it this way instead of the "
            f"onnxruntime session above:",
            "",
            "```python",
            runtime.loading(f"{folder}/onnx/model.onnx", artifact.precision),
            "```",
        ]
    return lines


def decision_lines(report: RunReport) -> list[str]:
    """One decision per batch size (the recommendation against the user's model), for the first lines of a report."""
    decisions = report.decisions
    if decisions:
        return [
            decision_line(c, report.energy_meter.proportional_to, deploy_folder(report, c.candidate)) for c in decisions
        ]
    if not report.recommendations:
        return [f"Keep your model as given: no artifact is within the budget ({report.quality_budget.describe()})"]
    return [
        f"Deploy {r.artifact} at {shape_words(r.batch_size, r.sequence_length)} (the original FP32 model was not "
        f"measured at that batch size to compare it with)"
        for r in report.recommendations
    ]


def _interval_text(interval: RatioInterval | None, overall_ratio: float) -> str:
    if interval is None:
        return f"{overall_ratio:.2f}x (no interval)"
    return f"{bracketed(interval)} (within noise)" if interval.within_noise else bracketed(interval)


def headline_comparisons(report: RunReport) -> list[Comparison]:
    """The comparisons at the smallest batch size measured: the latency-bound case most services run."""
    if not report.comparisons:
        return []
    smallest = min(c.batch_size for c in report.comparisons)
    return [c for c in report.comparisons if c.batch_size == smallest]


def runtime_table(report: RunReport) -> Table | None:
    """The same exported model on each runtime, per batch size, and which ranks first by the recommendation's criterion
    (J/inference where energy was measured, else p50 latency): None with one runtime.

    A separate view from the comparisons, which never mix runtimes: this one says where to deploy.
    """
    from greencompress.runtimes import RUNTIMES

    onnx_runtimes = list(dict.fromkeys(r.artifact.runtime for r in report.artifacts if r.artifact.source == "onnx"))
    if len(onnx_runtimes) < 2:
        return None
    by_file: dict = {}  # (file, precision) -> runtime -> result: bf16 runs the FP32 file, but is not FP32
    for result in report.artifacts:
        if result.artifact.runtime in onnx_runtimes and result.artifact.path is not None:
            by_file.setdefault((result.artifact.path.name, result.artifact.precision), {})[result.artifact.runtime] = (
                result
            )
    measured = report.energy_meter.measured
    # Short names, so the table fits a terminal.
    short = [(RUNTIMES.get(runtime).short_name if runtime in RUNTIMES else "") or runtime for runtime in onnx_runtimes]
    headers = [
        "file",
        "batch",
        *[f"p50 ms {name}" for name in short],
        *[f"J/inf {name}" for name in short],
        # The recommendation's own criterion: joules where measured, else p50 latency (an estimate is CPU time).
        "cheapest (J/inf)" if measured else "fastest (p50; energy estimated)",
    ]
    rows = []
    for (file_name, _), results in by_file.items():
        for bench in next(iter(results.values())).benchmarks:
            shape = bench.latency.shape
            found = {runtime: results[runtime].at_batch(*shape) for runtime in onnx_runtimes if runtime in results}
            if len(found) < len(onnx_runtimes) or None in found.values():
                continue
            cheapest = min(found, key=lambda runtime: ranking_figure(found[runtime], measured))
            # A paired interval that holds 1 against any other runtime: the ranking is not resolved here.
            tied = any(
                (interval := versus(found[cheapest], other, measured)) is None or interval.within_noise
                for runtime, other in found.items()
                if runtime != cheapest
            )
            rows.append(
                [
                    file_name,
                    shape_label(*shape),
                    *[f"{found[r].latency.p50_ms:.3f}" for r in onnx_runtimes],
                    *[f"{found[r].joules_per_inference:.4g}" for r in onnx_runtimes],
                    cheapest + (" (within noise)" if tied else ""),
                ]
            )
    return headers, rows


def recommendation_table(report: RunReport) -> Table | None:
    """Per batch size: what to deploy (runtime and precision), what ranked it, and its margin over the next best."""
    recommendations = report.recommendations
    if not recommendations:
        return None
    headers = ["batch", "deploy", "figure", "vs next best [95% CI]", "top-1 vs original"]
    rows = []
    for r in recommendations:
        figure = f"{r.value:.4g} J/inf" if r.ranked_by.startswith("J/") else f"{r.value:.3f} ms p50"
        if r.versus_runner_up is None:
            margin = "only candidate"
        else:
            v = r.versus_runner_up
            margin = f"{bracketed(v)} of {r.runner_up}" + (" (within noise)" if r.within_noise else "")
        drop = f"{0.0 - r.top1_drop_points:+.2f} pt" if r.top1_drop_points is not None else "n/a"
        rows.append(
            [
                shape_label(r.batch_size, r.sequence_length),
                f"{r.artifact} ({r.runtime}, {r.precision})",
                figure,
                margin,
                drop,
            ]
        )
    return headers, rows


def recommendation_note(report: RunReport) -> str:
    """What the recommendation rests on, in one sentence."""
    recommendations = report.recommendations
    budget = report.quality_budget
    if not recommendations:
        return f"No artifact is within the budget ({budget.describe()}): nothing to recommend."
    left_out = sorted({name for r in recommendations for name in r.over_budget})
    basis = (
        f"the cheapest in joules per inference ({report.energy_meter.method})"
        if report.energy_meter.measured
        else "the fastest (p50 latency): energy was not measured here, so it is not ranked by energy"
    )
    settings = (
        "gates.min_embedding_cosine and gates.min_neighbour_agreement"
        if budget.metric == "embedding"
        else "gates.max_accuracy_drop, default 1"
    )
    return (
        f"Per batch size, {basis}, among artifacts within the budget: {budget.describe()} ({settings})"
        + (f"; left out: {', '.join(left_out)}" if left_out else "")
        + ". The margin pairs the winner with the runner-up over the same interleaved rounds."
    )


def plain_findings(report: RunReport) -> list[str]:
    """Sentences that say what a reader must not miss: whether pruning bought speed at each batch size, a slower
    compressed model, a busy machine, idle drift, noisy or estimated energy."""
    findings = []
    by_name = {result.artifact.name: result.artifact for result in report.artifacts}
    for c in report.comparisons:
        candidate, baseline = by_name[c.candidate], by_name[c.baseline]
        # Structure removed (channels, heads, FFN neurons by prune; layers or blocks by depth), same precision.
        removed = [
            name
            for name in ("depth", "prune")
            if name in candidate.model_techniques and name not in baseline.model_techniques
        ]
        pruning_only = bool(removed) and candidate.precision == baseline.precision
        what = {("depth",): "Removing layers", ("prune",): "Pruning"}.get(tuple(removed), "Removing layers and pruning")
        interval = c.latency_p50
        ratio = f"{interval.ratio if interval else c.latency_p50_ratio:.2f}x"
        bounds = f" (95% CI [{interval.low:.2f}, {interval.high:.2f}])" if interval else ""
        where = f"on {c.runtime} at {shape_words(c.batch_size, c.sequence_length).replace('batch', 'batch size', 1)}"
        if pruning_only and (c.latency_p50_ratio > 0.95 or (interval and interval.within_noise)):
            findings.append(
                f"{what} bought no real speed: {c.candidate} runs at {ratio} the p50 latency of {c.baseline} "
                f"{where}{bounds}, despite fewer MACs. Channel counts the runtime's kernels run fast (prune: round_to: "
                f"auto), removing whole layers (depth), a larger batch or a lower ratio may help."
            )
        elif pruning_only:
            findings.append(
                f"{what} bought real speed: {c.candidate} runs at {ratio} the p50 latency of "
                f"{c.baseline} {where}{bounds}."
            )
        elif interval is not None and interval.within_noise:
            findings.append(
                f"{c.candidate} and {c.baseline} {where}: no latency difference this measurement can "
                f"resolve ({ratio}{bounds})."
            )
        elif not c.faster:
            findings.append(
                f"{c.candidate} is SLOWER than {c.baseline} {where}: p50 latency {ratio} the baseline's{bounds}. "
                f"Compression did not pay off there."
            )
    busy, windows, worst = report.busy_windows
    if busy:
        findings.append(
            f"The machine was BUSY during {busy} of {windows} measurement windows: other processes used up to "
            f"{100 * worst:.0f}% of its CPU capacity (threshold {100 * BUSY_SHARE:.0f}%). Their threads compete with "
            f"the model's and, for a meter, their energy counts too: rerun on a quiet machine before trusting small "
            f"differences."
        )
    if report.idle_drift:
        findings.append(f"Idle power is not stable: {report.idle_drift}.")
    findings += gpu_telemetry_findings(report)
    noisy = [
        f"{result.artifact.name} at {shape_words(*bench.latency.shape)} (+-{100 * bench.energy.relative_ci95:.1f}% "
        f"after {bench.energy.windows} windows)"
        for result in report.artifacts
        for bench in result.benchmarks
        if bench.energy.noisy
    ]
    if noisy:  # one line, however many: each figure is also marked "noisy" in the tables
        settings = report.recipe.get("benchmark") or {}
        stopped = (
            f"the benchmark.max_time_s budget ({settings['max_time_s']:g} s per batch size) was spent"
            if settings.get("max_time_s")
            else f"measuring stopped at benchmark.max_windows ({settings.get('max_windows', 'its limit')}); "
            f"benchmark.max_time_s keeps measuring such figures for a time you choose"
        )
        findings.append(
            f"Energy per inference is NOISY (95% CI wider than the target) for {len(noisy)} of "
            f"{sum(len(r.benchmarks) for r in report.artifacts)} figures: {'; '.join(noisy)}; {stopped}. "
            f"Treat small differences among them as unresolved."
        )
    if not report.energy_meter.measured:
        basis = report.energy_meter.proportional_to
        findings.append(
            f"Energy was not measured on this machine: J figures are ESTIMATES ({report.energy_meter.method}: "
            f"{basis} x an assumed power), so their ratios are {basis} ratios, not energy savings you could bill."
        )
    return findings


def gpu_telemetry_findings(report: RunReport) -> list[str]:
    """Per GPU: the SM clock range and hottest temperature over every window, and windows whose clock was limited."""
    from greencompress.measure.energy.nvml import LIMITING_REASONS

    seen: dict[str, dict] = {}
    for result in report.artifacts:
        for bench in result.benchmarks:
            for window in bench.energy.window_telemetry:
                for domain, reading in window.items():
                    if not domain.startswith("gpu"):
                        continue
                    facts = seen.setdefault(
                        domain, {"clocks": [], "temperatures": [], "limited": 0, "windows": 0, "reasons": set()}
                    )
                    facts["windows"] += 1
                    facts["clocks"] += [reading["sm_clock_mhz"]] if reading.get("sm_clock_mhz") else []
                    facts["temperatures"] += [reading["temperature_c"]] if reading.get("temperature_c") else []
                    limiting = set(reading.get("throttle_reasons", ())) & set(LIMITING_REASONS)
                    facts["limited"] += bool(limiting)
                    facts["reasons"] |= limiting
    findings = []
    for domain, facts in seen.items():
        clock = (
            f"SM clock {min(facts['clocks'])}-{max(facts['clocks'])} MHz"
            if facts["clocks"]
            else "SM clock not reported"
        )
        heat = f", up to {max(facts['temperatures'])} C" if facts["temperatures"] else ""
        limited = (
            f"; clocks LIMITED in {facts['limited']} of {facts['windows']} windows "
            f"({', '.join(sorted(facts['reasons']))}): figures of those windows are not at full speed"
            if facts["limited"]
            else "; no power or thermal limit reached"
        )
        findings.append(f"{domain} at the end of each window: {clock}{heat}{limited}.")
    return findings


def stage_lines(report: RunReport) -> list[str]:
    """One line per stage: its settings and, for stages on the PyTorch model, what it cost and bought.

    Each technique words its own facts (Technique.describe); a technique that is not installed
    here (a plugin's, in a report from elsewhere) gets its settings and the generic facts only.
    """
    from greencompress.compress.technique import TECHNIQUES

    lines = []
    for stage in report.stages:
        metrics, facts = stage.metrics, []
        method = TECHNIQUES.get(stage.technique) if stage.technique in TECHNIQUES else None
        if "top1" in metrics:
            facts.append(f"top-1 after it {100 * metrics['top1']:.2f}%")
        if "macs" in metrics:
            facts.append(f"{metrics['macs'] / 1e6:.1f} M MACs, {metrics['params'] / 1e6:.2f} M parameters")
        if method is not None:
            facts += method.describe(stage.settings, metrics)
        settings = method.shown_settings(stage.settings) if method is not None else stage.settings
        summary = f": {'; '.join(facts)}" if facts else ""
        lines.append(f"`{stage.technique}` ({_settings(settings)}){summary}")
    return lines


def gate_lines(report: RunReport) -> list[str]:
    """One sentence per quality gate check: PASS or FAIL, on which comparison, with the figure."""
    return [
        f"{'PASS' if gate.passed else 'FAIL'} {gate.gate}: {gate.comparison}: {gate.detail}" for gate in report.gates
    ]


def render_markdown(report: RunReport) -> str:
    """The whole report.md."""
    environment = report.environment
    cpu = environment["cpu"]
    versions = environment["versions"]
    lines = [
        f"# greencompress report: {report.name}" + ("" if report.complete else " (INCOMPLETE)"),
        "",
        *[f"**{line}.**  " for line in decision_lines(report)],
        "",
        *[*(loading := loading_lines(report)), *([""] if loading else [])],
        f"Measured {report.created_utc} on **{cpu['model']}** ({cpu['logical_cores']} logical cores; "
        f"flags: {', '.join(cpu['flags']) or 'none detected'}), {environment['threads']} threads, "
        f"{environment['os']}; torch {versions['torch']}, onnxruntime {versions['onnxruntime']}, "
        f"greencompress {versions['greencompress']}." + units_and_runtimes(environment),
        *(["", f"Models ran on {sentence}."] if (sentence := gpu_sentence(environment)) else []),
        "",
        f"Model: {report.provenance.get('description', report.provenance.get('source'))}.  ",
        f"Data: {report.data}.",
        *(["", line] if (line := embedding_agreement_line(report)) else []),
        "",
        "## Results",
        "",
        *markdown_table(artifact_table(report)),
        "",
        energy_legend(report),
        "",
        "## Compressed vs baseline (same runtime, same hardware, same batch size; energy: "
        f"{report.energy_meter.method})",
        "",
        *[f"**{headline(c, report.energy_meter.proportional_to)}.**  " for c in headline_comparisons(report)],
        "",
    ]
    if report.comparisons:
        lines += markdown_table(comparison_table(report))
    else:
        lines.append("No artifact pair shares a runtime and batch size, so no ratio is shown.")
    findings = plain_findings(report)
    if findings:
        lines += ["", *[f"- **Note:** {finding}" for finding in findings]]
    recommendation = recommendation_table(report)
    if recommendation is not None:
        lines += [
            "",
            "## Deployment recommendation",
            "",
            *markdown_table(recommendation),
            "",
            recommendation_note(report),
        ]
    if report.power_limit_sweep:
        lines += ["", "## GPU power limits", "", *power_limit_lines(report.power_limit_sweep)]
    runtimes = runtime_table(report)
    if runtimes is not None:
        lines += [
            "",
            f"## The same model on each runtime (same hardware and batch size; energy: {report.energy_meter.method})",
            "",
            *markdown_table(runtimes),
            "",
            "Which runtime to deploy each file on. The ratios above compare artifacts on one runtime only.",
        ]
    lines += [
        "",
        "PyTorch eager FP32 is the as-trained reference; ratios compare artifacts on the same runtime only.",
        "",
        "## Energy",
        "",
        f"Method: `{report.energy_meter.method}` "
        f"({'measured' if report.energy_meter.measured else 'estimated, not measured'}); "
        f"{report.energy_meter_reason}.",
        "",
        *[f"- {assumption}" for assumption in report.energy_meter.assumptions],
        *[
            f"- idle power {check.when}, measured for {check.duration_s:.1f} s with the same meter: "
            + ", ".join(f"{domain} {watts:.3f} W" for domain, watts in check.power_w.items())
            + f" (total +-{check.ci95_w:.2g} W, 95% CI)"
            for check in report.idle_checks or (report.idle,)
        ],
        "",
        "## Carbon",
        "",
        *markdown_table(carbon_table(report)),
        "",
        carbon_legend(report),
        "",
        "## Export",
        "",
        f"Exporter: `{report.export['exporter']}`, opset {report.export['opset']}. Parity with PyTorch on "
        f"{report.export['parity']['samples']} real inputs: max |difference| "
        f"{report.export['parity']['max_abs_diff']:.3g}, "
        f"top-1 agreement {report.export['parity']['top1_agreement']:.2%}." + _fusion_sentence(report.export["parity"]),
        "",
        "## Stages",
        "",
        *[f"- {line}" for line in stage_lines(report)],
    ]
    if report.gates:
        lines += ["", "## Quality gates", "", *[f"- {line}" for line in gate_lines(report)]]
    if report.notes:
        lines += ["", "## Notes", "", *[f"- {note}" for note in report.notes]]
    return "\n".join(lines) + "\n"


def gpu_sentence(environment: dict) -> str | None:
    """The GPU a run measured on, as NVML identified it (name, UUID, driver, memory, limit, clocks); None on CPU."""
    if not str(environment.get("device", "cpu")).startswith("cuda"):
        return None
    gpus = environment.get("gpu") or {}
    if not gpus:
        return f"{environment['device']} (NVML did not identify it)"
    described = []
    for domain, gpu in gpus.items():
        facts = [gpu.get("uuid"), f"driver {gpu.get('driver')}"]
        facts += [f"{gpu['memory_bytes'] / 2**30:.0f} GiB"] if gpu.get("memory_bytes") else []
        facts += [f"power limit {gpu['power_limit_w']:g} W"] if gpu.get("power_limit_w") else []
        facts += [f"SM clock up to {gpu['max_sm_clock_mhz']} MHz"] if gpu.get("max_sm_clock_mhz") else []
        described.append(f"**{gpu.get('name')}** ({domain}, {environment['device']}: {', '.join(map(str, facts))})")
    return "; ".join(described)


def units_and_runtimes(environment: dict) -> str:
    """What decides the ranking: the CPU's matrix units present, and each runtime's version (reports since 1.2)."""
    units = [name for name, present in environment["cpu"].get("matrix_units", {}).items() if present]
    # Older reports listed every registered runtime, those that could not run here as "not installed".
    runtimes = [
        f"{name} {version}" for name, version in environment.get("runtimes", {}).items() if version != "not installed"
    ]
    # The reason's first clause (the whole, with what to install, is in report.json).
    unavailable = [
        f"{name} ({reason.split(' (')[0].split(': ')[0]})"
        for name, reason in environment.get("runtimes_unavailable", {}).items()
    ]
    return (
        (
            f" Matrix units: {', '.join(units) or 'none of AVX2, VNNI, AMX'}."
            if "matrix_units" in environment["cpu"]
            else ""
        )
        + (f" Runtimes usable here: {', '.join(runtimes)}." if runtimes else "")
        + (f" Registered but unavailable here: {'; '.join(unavailable)}." if unavailable else "")
    )


def markdown_table(table: Table) -> list[str]:
    """A pipe table's lines: header, rule, one line per row."""
    headers, rows = table
    return [
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
        *["| " + " | ".join(row) + " |" for row in rows],
    ]


def _settings(settings: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in settings.items() if value is not None)


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def _fusion_sentence(parity: dict) -> str:
    """What ONNX Runtime's transformer optimizer did to the exported file, and why (transformers only)."""
    fusion, plan = parity.get("fusion"), parity.get("fusion_plan")
    if isinstance(fusion, dict):
        fusion = ", ".join(f"{count} {name}" for name, count in fusion.items())
    said = "; ".join(part for part in (fusion, plan) if part)
    return f" Transformer fusions: {said}." if said else ""


def embedding_agreement_line(report: RunReport) -> str | None:
    """How each artifact's embeddings agree with the FP32 model's (sentence embedders only), or None."""
    parts = [
        f"{r.artifact.name} {r.accuracy.embedding_cosine:.4f} ({100 * r.accuracy.neighbour_agreement:.1f}%"
        + (f", {100 * r.accuracy.recall_at_10:.1f}%" if r.accuracy.recall_at_10 is not None else "")
        + ")"
        for r in report.artifacts
        if r.accuracy is not None and r.accuracy.embedding_cosine is not None
    ]
    if not parts:
        return None
    return (
        "Embeddings against the FP32 model's, on the evaluated texts: mean cosine (share of texts whose nearest "
        "other text stays the same, recall@10 of the FP32 model's 10 nearest): " + "; ".join(parts) + "."
    )


def _short(artifact_name: str, runtime: str) -> str:
    return artifact_name.removeprefix(f"{runtime}-")


def _change(ratio: float) -> str:
    return f"{100 * (1 - ratio):.0f}% less" if ratio <= 1 else f"{100 * (ratio - 1):.0f}% more"


def power_limit_lines(rows) -> list[str]:
    """The power-limit sweep: a row per limit, artifact and batch size, then the energy-optimal and fastest limits."""
    from greencompress.measure.energy.power_limits import optimal_and_fastest

    table = (
        ["limit W", "in force W", "artifact", "batch", "J/inference", "p50 ms", "note"],
        [
            [
                f"{r['limit_w']:g}",
                f"{r['in_force_w']:g}",
                r["artifact"],
                str(r["batch_size"]),
                f"{r['j_per_inference']:.4g} ± {r['ci95_j']:.2g}",
                f"{r['p50_ms']:.3f}",
                "" if r["applied"] else f"not applied: {r['reason']}",
            ]
            for r in rows
        ],
    )
    lines = markdown_table(table) + [""]
    for artifact, batch in dict.fromkeys((r["artifact"], r["batch_size"]) for r in rows):
        measured = [r for r in rows if r["artifact"] == artifact and r["batch_size"] == batch and r["applied"]]
        if len(measured) > 1:
            optimal, fastest = optimal_and_fastest(measured)
            lines.append(
                f"- {artifact}, batch {batch}: least energy at {optimal['limit_w']:g} W "
                f"({optimal['j_per_inference']:.4g} J/inference), fastest at {fastest['limit_w']:g} W "
                f"({fastest['p50_ms']:.3f} ms p50)."
            )
    return lines
