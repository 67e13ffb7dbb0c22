"""What a search leaves: the Pareto front, every trial, the chosen candidate and its recipe as best.yaml.

Written into the search folder as search.json (for scripts), search.md, search.html (the front with
interval bars, and the trials table) and best.yaml: the chosen trial's resolved recipe, which
`greencompress run best.yaml` reproduces.
"""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path

import numpy as np

from greencompress.core.files import write_text_atomic
from greencompress.measure.latency import shape_words
from greencompress.measure.quality import QualityBudget
from greencompress.report.pareto import non_dominated
from greencompress.search.trial import Outcome, worker_gone


@dataclass(frozen=True)
class TrialRow:
    """One trial as the summary shows it."""

    number: int
    state: str  # complete, pruned (stopped early, by the proxy or after one epoch), fail, running
    params: dict
    outcome: Outcome | None
    proxy: dict | None
    reason: str = ""
    run_dir: str = ""
    feasible: bool = False  # complete and within the accuracy budget


@dataclass(frozen=True)
class Summary:
    """The search's result; `chosen` is None when no trial is within the budget."""

    objectives: list[str]
    max_accuracy_drop: float
    batch_size: int
    rows: list[TrialRow]
    front: list[int]  # trial numbers on the Pareto front (complete trials, every objective)
    chosen: int | None
    verdict: str  # whether the chosen one is faster than the unpruned model at its precision, by its paired interval
    proxy_quality: dict = field(default_factory=dict)
    sequence_length: int | None = None  # a text transformer's trials: the tokens per input they were scored at
    budget: str = ""  # the quality budget in words, naming the metric that decides feasibility
    # A language model's search: the front's models measured again, together with the anchor in one set of
    # interleaved rounds (search/remeasure.py), by trial number; they decide the chosen one.
    remeasured: dict = field(default_factory=dict)
    remeasure_shape: dict = field(default_factory=dict)  # batch_size, prompt_tokens, new_tokens, rounds
    max_perplexity_increase: float | None = None  # a language model's budget, percent

    @property
    def shape(self) -> str:
        if self.generating:
            return f"batch {self.batch_size}, prompt {self.sequence_length} tokens"
        return shape_words(self.batch_size, self.sequence_length)

    @property
    def generating(self) -> bool:
        """Whether its trials are a language model's (judged by perplexity, measured per generated token)."""
        return any(row.outcome is not None and row.outcome.unit != "inference" for row in self.rows) or (
            self.max_perplexity_increase is not None
        )


def rows_of(study) -> list[TrialRow]:
    trials = study.get_trials(deepcopy=False)
    # Which trial ran another's settings again: after Ctrl-C or a dead worker (retry_of), or Optuna's retry of
    # a trial whose heartbeat stopped (failed_trial).
    retried_as, retry_reasons = {}, {}
    for trial in trials:
        for origin in (
            trial.user_attrs.get("retry_of", trial.user_attrs.get("resume_number")),
            trial.system_attrs.get("failed_trial"),
        ):
            if origin is not None:
                retried_as.setdefault(origin, trial.number)
                retry_reasons.setdefault(origin, trial.user_attrs.get("retry_of_reason"))
    rows = []
    for trial in trials:
        attrs = trial.user_attrs
        outcome = Outcome(**attrs["outcome"]) if "outcome" in attrs else None
        state = trial.state.name.lower()
        if state == "running" and (gone := worker_gone(attrs)):  # killed, and the search not run again since
            state, attrs = "fail", {**attrs, "stopped": f"{gone}; run the search again to retry it"}
        reason = (
            attrs.get("stopped", "")
            or ("interrupted" if attrs.get("interrupted") else "")
            or attrs.get("error", "")
            or trial.system_attrs.get("fail_reason", "").split("\n")[0]
        )
        if state == "fail" and not reason and trial.number in retried_as:
            reason = retry_reasons[trial.number] or "its worker stopped beating (heartbeat expired)"
        if trial.number in retried_as:
            reason += f"; retried as trial {retried_as[trial.number]}"
        rows.append(
            TrialRow(
                trial.number,
                state,
                attrs.get("resolved_params", trial.params),
                outcome,
                attrs.get("proxy"),
                reason,
                attrs.get("run_dir", ""),
                outcome is not None and trial.state.name == "COMPLETE" and attrs.get("constraint", 1) <= 0,
            )
        )
    return rows


def energy_interval(outcome: Outcome, remeasured: dict | None = None) -> tuple[float, float, float]:
    """(ratio, low, high) of the J/inference the trial ranks by: paired to its anchor (in the front's re-measurement
    where it has one); absolute J (with its interval) for a trial recorded before anchors existed."""
    paired = (remeasured or {}).get("energy_ratio") or outcome.anchor_energy_ratio
    if paired:
        return paired["ratio"], paired["ci95"][0], paired["ci95"][1]
    joules, spread = outcome.joules_per_inference, outcome.joules_ci95
    return joules, joules - spread, joules + spread


def choose(rows: list[TrialRow], remeasured: dict | None = None) -> int | None:
    """The lowest J/inference ratio to the anchor within the budget; trials whose ratio lies inside its 95% interval
    are ties, broken by latency (its ratio to the anchor). `remeasured`: the front measured again together (by
    trial number); the choice is then made among those, on those figures."""
    feasible = [row for row in rows if row.feasible]
    if remeasured:
        feasible = [row for row in feasible if row.number in remeasured]
    if not feasible:
        return None
    again = remeasured or {}

    def energy(row: TrialRow) -> tuple[float, float, float]:
        return energy_interval(row.outcome, again.get(row.number))

    def latency(row: TrialRow) -> float:
        if row.number in again:
            return again[row.number]["latency_ratio"]["ratio"]
        return (
            row.outcome.objective("latency_ratio") if row.outcome.anchor_latency_ratio else row.outcome.latency_p50_ms
        )

    lowest = min(feasible, key=lambda row: energy(row)[0])
    tied = [row for row in feasible if energy(row)[0] <= energy(lowest)[2]]
    return min(tied, key=lambda row: (latency(row), energy(row)[0])).number


def pareto_numbers(rows: list[TrialRow], objectives: list[str]) -> list[int]:
    complete = [row for row in rows if row.outcome is not None and row.state == "complete"]
    directions = ["maximize" if name == "top1" else "minimize" for name in objectives]
    values = [[row.outcome.objective(name) for name in objectives] for row in complete]
    return [complete[index].number for index in non_dominated(values, directions)]


def proxy_quality(rows: list[TrialRow]) -> dict:
    """How well the untrained latency ratio predicted the trained candidate's measured one (complete trials)."""
    pairs = [
        (_proxy_on(row.proxy, row.outcome.runtime)["ratio"], row.outcome.latency_ratio["ratio"])
        for row in rows
        if row.proxy and row.outcome and row.outcome.latency_ratio
    ]
    if not pairs:
        return {}
    predicted, measured = np.array(pairs).T
    quality = {
        "trials": len(pairs),
        "mean_abs_error": float(np.mean(np.abs(predicted - measured))),
        "max_abs_error": float(np.max(np.abs(predicted - measured))),
    }
    if len(pairs) >= 3 and np.std(predicted) > 0 and np.std(measured) > 0:
        quality["correlation"] = float(np.corrcoef(predicted, measured)[0, 1])
    return quality


def _proxy_on(proxy: dict, runtime: str) -> dict:
    """The proxy's result on `runtime` (a trial's proxy ran on each serving runtime; older trials on one)."""
    return proxy.get("by_runtime", {}).get(runtime, proxy)


def summarize(
    study,
    spec,
    budget: QualityBudget | None = None,
    remeasured: dict | None = None,
    remeasure_shape: dict | None = None,
) -> Summary:
    """The search's result; `budget` in words says what made a trial feasible (default: top-1 within the spec's
    budget.max_accuracy_drop). `remeasured`: a language model's front measured again together (by trial number)."""
    rows = rows_of(study)
    chosen = choose(rows, remeasured)
    scored = next((row.outcome.sequence_length for row in rows if row.outcome is not None), None)
    budget = budget or QualityBudget(max_drop_points=spec.budget.max_accuracy_drop)
    words = budget.describe()
    generating = budget.metric == "perplexity"
    verdict = (
        _generation_verdict(rows, chosen, words, remeasured or {}) if generating else _verdict(rows, chosen, words)
    )
    return Summary(
        spec.objective_names,
        spec.budget.max_accuracy_drop,
        spec.objectives.batch_size,
        rows,
        pareto_numbers(rows, spec.objective_names),
        chosen,
        verdict,
        proxy_quality(rows),
        scored,
        words,
        remeasured or {},
        remeasure_shape or {},
        budget.max_perplexity_increase if generating else None,
    )


def _generation_verdict(rows: list[TrialRow], chosen: int | None, budget: str, remeasured: dict) -> str:
    finished = sum(1 for row in rows if row.outcome is not None)
    if chosen is None:
        return (
            f"No candidate within the budget ({budget}) among {finished} measured trials ({len(rows)} in all); "
            "the measured front is below."
        )
    outcome = next(row.outcome for row in rows if row.number == chosen)
    again = remeasured.get(chosen)
    energy, latency = (
        (again["energy_ratio"], again["latency_ratio"])
        if again
        else (
            outcome.anchor_energy_ratio,
            outcome.anchor_latency_ratio,
        )
    )
    where = "re-measured with the front in one set of rounds" if again else "in its trial's rounds"
    cheaper = "cheaper than" if energy["ci95"][1] < 1 else "not cheaper, by an interval excluding 1, than"
    return (
        f"Trial {chosen} ({outcome.candidate}) is the cheapest within the budget ({budget}): perplexity "
        f"{outcome.perplexity:.3f} ({outcome.perplexity_increase:+.1f}%), decode J per generated token "
        f"{_interval_text(energy)} and time per output token {_interval_text(latency)} of {outcome.anchor}'s, "
        f"{where}: {cheaper} the original model."
    )


def _verdict(rows: list[TrialRow], chosen: int | None, budget: str) -> str:
    if chosen is None:
        finished = sum(1 for row in rows if row.outcome is not None)
        return (
            f"No candidate within the budget ({budget}) among {finished} measured trials "
            f"({len(rows)} in all); the measured front is below."
        )
    row = next(row for row in rows if row.number == chosen)
    outcome, latency = row.outcome, row.outcome.latency_ratio
    if latency is None:
        return f"Trial {chosen} is within the budget; no paired latency interval against {outcome.baseline}."
    ratio = f"{latency['ratio']:.3f}x [{latency['ci95'][0]:.3f}, {latency['ci95'][1]:.3f}]"
    faster = [r for r in rows if r.feasible and r.outcome.latency_ratio and r.outcome.latency_ratio["ci95"][1] < 1]
    if latency["ci95"][1] < 1:
        return (
            f"Trial {chosen} ({outcome.candidate}) is within the budget ({budget}) and faster than "
            f"{outcome.baseline} on {outcome.runtime} at {shape_words(outcome.batch_size, outcome.sequence_length)}: "
            f"latency {ratio}, an interval that excludes 1."
        )
    others = (
        (
            f"; trials {', '.join(str(r.number) for r in faster)} are faster by an interval excluding 1 but use "
            "more energy"
        )
        if faster
        else "; no candidate within the budget is faster by an interval excluding 1"
    )
    return (
        f"Trial {chosen} ({outcome.candidate}) has the lowest energy within the budget ({budget}), but its latency "
        f"against {outcome.baseline} on {outcome.runtime} at "
        f"{shape_words(outcome.batch_size, outcome.sequence_length)} is {ratio}, which does not exclude 1 on the fast "
        f"side{others}."
    )


RANKING_NOTE = (
    "Trials rank by their J/inference as a ratio to the anchor (the original FP32 model on ONNX Runtime), "
    "paired over the interleaved rounds of their own run: absolute joules drift with the machine's state "
    "between trials, ratios within one run do not."
)
GENERATION_RANKING_NOTE = (
    "Trials rank by their decode J per generated token as a ratio to the anchor (the original FP32 model on "
    "PyTorch, eager with its KV cache), paired over the interleaved rounds of their own run; the front's models are "
    "then measured again together, with the anchor, in one set of rounds, and the cheapest within the budget is "
    "chosen on those figures."
)


def ranking_note(summary: Summary) -> str:
    return GENERATION_RANKING_NOTE if summary.generating else RANKING_NOTE


def write_summary(summary: Summary, folder: Path) -> Path | None:
    """search.json, search.md, search.html and (when a trial was chosen) best.yaml; returns best.yaml's path."""
    write_text_atomic(folder / "search.json", json.dumps(asdict(summary), indent=2, default=str))
    write_text_atomic(folder / "search.md", render_markdown(summary))
    write_text_atomic(folder / "search.html", render_html(summary))
    if summary.chosen is None:
        (folder / "best.yaml").unlink(missing_ok=True)
        return None
    row = next(row for row in summary.rows if row.number == summary.chosen)
    best = folder / "best.yaml"
    shutil.copyfile(Path(row.run_dir) / "recipe.resolved.yaml", best)
    return best


def _params_text(params: dict) -> str:
    return ", ".join(
        f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}" for key, value in params.items()
    )


def _interval_text(interval: dict | None) -> str:
    if not interval:
        return "-"
    return f"{interval['ratio']:.3f}x [{interval['ci95'][0]:.3f}, {interval['ci95'][1]:.3f}]"


def _fidelity_text(outcome: Outcome | None) -> str:
    if outcome is None or outcome.embedding_cosine is None:
        return "-"
    return f"{outcome.embedding_cosine:.4f}, {100 * outcome.neighbour_agreement:.1f}%"


def table_rows(summary: Summary, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """The trials table; `compact` (for a terminal) leaves out the settings and shortens the notes."""
    if summary.generating:
        return _generation_table_rows(summary, compact)
    anchors = sorted({row.outcome.anchor for row in summary.rows if row.outcome and row.outcome.anchor})
    headers = [
        "trial",
        "state",
        "settings",
        "runtime",
        "top-1 %",
        "drop (pts)",
        f"J/inference vs {' / '.join(anchors) or 'anchor'} (paired, ranks)",
        "J/inference",
        "latency p50 ms",
        "latency vs unpruned (paired)",
        "proxy (untrained)",
        "embeddings: cosine, neighbour kept",
        "note",
    ]
    rows = []
    for row in summary.rows:
        o = row.outcome
        marks = ("chosen; " if row.number == summary.chosen else "") + (
            "front; " if row.number in summary.front else ""
        )
        proxy = _proxy_on(row.proxy, o.runtime) if row.proxy and o else row.proxy
        rows.append(
            [
                str(row.number),
                row.state,
                _params_text(row.params),
                o.runtime if o else "-",
                f"{o.top1:.2f}" if o else "-",
                f"{o.accuracy_drop:.2f}" if o else "-",
                _interval_text(o.anchor_energy_ratio) if o else "-",
                f"{o.joules_per_inference:.4g} ± {o.joules_ci95:.2g}" if o else "-",
                f"{o.latency_p50_ms:.3f}" if o else "-",
                _interval_text(o.latency_ratio) if o else "-",
                _interval_text({"ratio": proxy["ratio"], "ci95": [proxy["low"], proxy["high"]]}) if proxy else "-",
                _fidelity_text(o),
                (marks + (row.reason or ("over budget" if o and not row.feasible else ""))).strip("; "),
            ]
        )
    if compact:
        headers.pop(2)
        rows = [[*row[:2], *row[3:-1], row[-1].split(":")[0]] for row in rows]
    return headers, rows


def _generation_table_rows(summary: Summary, compact: bool) -> tuple[list[str], list[list[str]]]:
    """A language model's trials: perplexity, continuation agreement, decode and prefill energy against the anchor,
    the front's re-measured ratio, and what structure each model lacks."""
    anchor = next((row.outcome.anchor for row in summary.rows if row.outcome), "anchor")
    headers = [
        "trial",
        "state",
        "settings",
        "runtime",
        "perplexity",
        "increase %",
        "continuations kept",
        f"J/generated token vs {anchor} (paired, trial's rounds)",
        f"re-measured with the front vs {anchor}",
        "J/generated token",
        f"TPOT vs {anchor}",
        f"prefill J/prompt token vs {anchor}",
        "proxy: untrained structure's TPOT vs the original's",
        "structure removed",
        "note",
    ]
    rows = []
    for row in summary.rows:
        o, again, proxy = row.outcome, summary.remeasured.get(row.number), row.proxy
        marks = ("chosen; " if row.number == summary.chosen else "") + (
            "front; " if row.number in summary.front else ""
        )
        rows.append(
            [
                str(row.number),
                row.state,
                _params_text(row.params),
                o.runtime if o else "-",
                f"{o.perplexity:.3f}" if o else "-",
                f"{o.perplexity_increase:+.1f}" if o else "-",
                f"{100 * o.continuation_agreement:.0f}%" if o and o.continuation_agreement is not None else "-",
                _interval_text(o.anchor_energy_ratio) if o else "-",
                _interval_text(again["energy_ratio"]) if again else "-",
                f"{o.joules_per_inference:.4g}" if o else "-",
                _interval_text(o.anchor_latency_ratio) if o else "-",
                _interval_text(o.anchor_prefill_energy_ratio) if o else "-",
                _proxy_text(proxy),
                "; ".join(o.structure_removed) or "none" if o else "-",
                (marks + (row.reason or ("over budget" if o and not row.feasible else ""))).strip("; "),
            ]
        )
    if compact:
        keep = [i for i, header in enumerate(headers) if header not in ("settings", "structure removed")]
        headers = [headers[i] for i in keep]
        rows = [[row[i] if i != len(row) - 1 else row[i].split(":")[0] for i in keep] for row in rows]
    return headers, rows


def _proxy_text(proxy: dict | None) -> str:
    if not proxy:
        return "-"
    return f"{_interval_text({'ratio': proxy['ratio'], 'ci95': [proxy['low'], proxy['high']]})} on {proxy['runtime']}"


def energy_method_text(summary: Summary) -> str:
    """Where the trials' J/inference came from, and whether it is a measurement."""
    methods = {(row.outcome.energy_method, row.outcome.measured) for row in summary.rows if row.outcome}
    return (
        ", ".join(
            f"{method} ({'measured' if measured else 'an ESTIMATE, not a measurement'})"
            for method, measured in sorted(methods)
        )
        or "none"
    )


def render_markdown(summary: Summary) -> str:
    headers, rows = table_rows(summary)
    lines = [
        "# greencompress search",
        "",
        f"Objectives: {', '.join(summary.objectives)} at {summary.shape}; budget: "
        f"{summary.budget or f'top-1 within {summary.max_accuracy_drop} points of the unpruned FP32 model'}. "
        f"Energy: {energy_method_text(summary)}.",
        "",
        ranking_note(summary),
        "",
        f"**{summary.verdict}**",
        "",
    ]
    if summary.remeasure_shape:
        r = summary.remeasure_shape
        lines += [
            f"The front re-measured together: batch {r['batch_size']}, prompt {r['prompt_tokens']} tokens, "
            f"{r['new_tokens']} new tokens, {r['rounds']} interleaved rounds, prompts no trial used.",
            "",
        ]
    if summary.chosen is not None:
        lines += [f"Chosen: trial {summary.chosen}; `greencompress run best.yaml` reproduces it.", ""]
    lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    if summary.proxy_quality:
        q = summary.proxy_quality
        lines += [
            "",
            f"Proxy: untrained latency ratio against the trained candidate's measured ratio over {q['trials']} "
            f"trials: mean absolute error {q['mean_abs_error']:.3f}, largest {q['max_abs_error']:.3f}"
            + (f", correlation {q['correlation']:.2f}" if "correlation" in q else "")
            + ".",
        ]
    return "\n".join(lines) + "\n"


def render_html(summary: Summary) -> str:
    from greencompress.report.html import STYLE, html_table

    headers, rows = table_rows(summary)
    plot = front_plot(summary)
    figure = (
        f'<figure id="front"><img alt="quality against energy per inference or token, Pareto front drawn" '
        f'src="data:image/png;base64,{base64.b64encode(plot).decode()}"></figure>'
        if plot
        else ""
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>greencompress search</title>"
        f"<style>{STYLE}</style></head><body><h1>greencompress search</h1>"
        f"<p class='note'>{escape(summary.verdict)}</p>"
        f"<p class='method'>Objectives: {escape(', '.join(summary.objectives))} at {summary.shape}; "
        f"energy: {escape(energy_method_text(summary))}. {escape(ranking_note(summary))} "
        "Bars: 95% paired intervals.</p>"
        f"{figure}<h2>Trials</h2>{html_table(headers, rows)}</body></html>"
    )


def front_plot(summary: Summary) -> bytes | None:
    """Top-1 (a language model's perplexity increase) against J/inference (J per generated token) for every measured
    trial, interval bars, the front joined, the chosen ringed."""
    from greencompress.report.plots import new_figure, png_bytes

    measured = [row for row in summary.rows if row.outcome is not None]
    if not measured:
        return None

    def quality(o: Outcome) -> float:
        return o.perplexity_increase if summary.generating else o.top1

    figure, axes = new_figure(7.0, 4.2)
    for row in measured:
        o = row.outcome
        ratio, low, high = energy_interval(o)
        axes.errorbar(
            ratio,
            quality(o),
            xerr=[[ratio - low], [high - ratio]],
            fmt="o",
            color="#1b9e77" if row.feasible else "#999999",
        )
        axes.annotate(str(row.number), (ratio, quality(o)), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = sorted(
        (energy_interval(row.outcome)[0], quality(row.outcome)) for row in measured if row.number in summary.front
    )
    if front:
        axes.plot(*zip(*front), color="#d95f02", linestyle="--", label="Pareto front")
    if summary.chosen is not None:
        o = next(row.outcome for row in measured if row.number == summary.chosen)
        axes.scatter(
            [energy_interval(o)[0]], [quality(o)], s=160, facecolors="none", edgecolors="#7570b3", label="chosen"
        )
    if summary.generating:
        axes.axhline(summary.max_perplexity_increase, color="grey", linestyle=":", label="perplexity budget")
    else:
        reference = measured[0].outcome.reference_top1
        axes.axhline(reference - summary.max_accuracy_drop, color="grey", linestyle=":", label="accuracy budget")
    anchor, unit = measured[0].outcome.anchor, measured[0].outcome.unit
    axes.set_xlabel(
        f"J per {unit} / {anchor}'s, same rounds ({summary.shape})" if anchor else f"J per {unit} ({summary.shape})"
    )
    axes.set_ylabel("perplexity increase (%)" if summary.generating else "top-1 accuracy (%)")
    axes.legend(fontsize=8)
    return png_bytes(figure)
