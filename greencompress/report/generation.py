"""A text-generation run's report: quality per model and runtime, prefill and decode per token, and the decision.

report.json holds the GenerationReport (`kind: text-generation`); report.md renders it. Every energy figure names
its method (a counter, or the CPU-time estimate, labelled as such); speed is only compared within one shape, one
run and this CPU, by paired ratios over the same prompts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from greencompress.core.files import write_text_atomic
from greencompress.measure.quality import DEFAULT_MAX_PERPLEXITY_INCREASE

SCHEMA = "text-generation 1.0"
# The perplexity increase the recommendation allows when gates.max_perplexity_increase is unset.
DEFAULT_BUDGET_PERCENT = DEFAULT_MAX_PERPLEXITY_INCREASE


@dataclass(frozen=True)
class GeneratedArtifact:
    """One model (`fp32`, or a weight-only variant) on one runtime, and its quality on the evaluation windows."""

    name: str  # model@runtime
    model: str
    runtime: str
    precision: str
    path: str | None
    size_bytes: int | None
    perplexity: float
    perplexity_change: float  # over the FP32 model's in PyTorch (0.01 = +1%)
    next_token_agreement: float  # share of scored positions with FP32 PyTorch's most likely next token
    continuation_agreement: float | None  # share of greedy continuation tokens equal to FP32 PyTorch's
    measured_speed: bool  # False for rounded weights on FP32 kernels (quality only)
    stage: dict
    note: str | None
    # What structure its model lacks against the original, stage by stage ("decoder layers 30 -> 22 (...)").
    structure_removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShapeResult:
    """Every generator at one workload shape: medians per generator and paired ratios against the FP32 references."""

    shape: dict  # batch_size, prompt_tokens, new_tokens
    fastest_fp32: str
    results: dict  # name -> figures
    ratios: dict  # name -> {"vs_torch_fp32:<figure>": interval, "vs_fastest_fp32:<figure>": interval}
    # A model with structure removed -> its dense twin on the same runtime, at the same precision (the original in
    # FP32, or the same weight-only stage applied to the original), where the run made one; the ratios against it
    # are `vs_dense:<figure>`.
    dense_twins: dict = field(default_factory=dict)
    left_out: dict = field(default_factory=dict)  # generator name -> why it was not measured at this shape


@dataclass(frozen=True)
class GenerationReport:
    recipe: str
    created_utc: str
    model: dict
    corpus: str
    perplexity_setting: dict
    cpu: dict
    threads: int
    energy: dict
    runtimes: list
    runtimes_left_out: dict
    builds: dict
    artifacts: tuple[GeneratedArtifact, ...]
    shapes: tuple[ShapeResult, ...]
    budget_percent: float | None
    seconds: float
    gates: tuple[dict, ...] = ()  # gates.max_perplexity_increase on every rounded model, on every runtime
    continuations: str = ""  # what continuation agreement compares: how many tokens, after which prompts
    memory: str = ""  # how the measuring process treated memory it freed (measure/memory.py)
    kind: str = SCHEMA

    @property
    def gates_passed(self) -> bool:
        return all(gate["passed"] for gate in self.gates)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> GenerationReport:
        """A report read back from its report.json."""
        return cls(
            **{
                **saved,
                "artifacts": tuple(GeneratedArtifact(**a) for a in saved["artifacts"]),
                "shapes": tuple(ShapeResult(**shape) for shape in saved["shapes"]),
                "gates": tuple(saved.get("gates", ())),
            }
        )

    @property
    def budget(self) -> float:
        return DEFAULT_BUDGET_PERCENT if self.budget_percent is None else self.budget_percent

    def cheapest(self, shape: int = 0) -> str | None:
        """The artifact with the least decode energy per generated token at workload shape `shape`, among those
        measured for speed within the perplexity budget; None when none is."""
        within = self._within_budget(shape)
        if not within:
            return None
        results = self.shapes[shape].results
        return min(within, key=lambda name: results[name]["joules_per_generated_token"])

    def recommended(self, shape: int = 0) -> str | None:
        """The decision at workload shape `shape` (the first by default): the least decode energy per generated token
        within the perplexity budget, preferring among the deployments that spend less per generated token than the
        fastest FP32 runtime those whose first token is not measurably slower than its (a paired interval wholly
        above 1x is: a saving per token that keeps users waiting longer for the first one is a regression they
        notice); where no saving deployment keeps the first token, the cheapest all the same (the decision says
        so). None when no artifact is within the budget."""
        within = self._within_budget(shape)
        ratios = self.shapes[shape].ratios if within else {}

        def saves(name: str) -> bool:
            energy = ratios.get(name, {}).get("vs_fastest_fp32:joules_per_generated_token")
            return energy is not None and energy["high"] < 1.0

        keeping = [name for name in within if saves(name) and not self.slower_first_token(name, shape)]
        if not keeping:
            return self.cheapest(shape)
        results = self.shapes[shape].results
        return min(keeping, key=lambda name: results[name]["joules_per_generated_token"])

    def slower_first_token(self, name: str, shape: int = 0) -> dict | None:
        """The paired ratio of `name`'s time to first token to the fastest FP32 runtime's, where it is measurably
        above 1x; None otherwise."""
        ratio = self.shapes[shape].ratios.get(name, {}).get("vs_fastest_fp32:time_to_first_token_ms")
        return ratio if ratio is not None and ratio["low"] > 1.0 else None

    def _within_budget(self, shape: int) -> list[str]:
        if len(self.shapes) <= shape:
            return []
        results = self.shapes[shape].results
        return [
            a.name
            for a in self.artifacts
            if a.measured_speed and a.name in results and 100 * a.perplexity_change <= self.budget
        ]

    def front(self, shape: int = 0) -> list[str]:
        """The artifacts measured for speed at workload shape `shape` that no other beats on both perplexity and
        decode energy per generated token, cheapest first."""
        results = self.shapes[shape].results
        points = {
            a.name: (a.perplexity, results[a.name]["joules_per_generated_token"])
            for a in self.artifacts
            if a.measured_speed and a.name in results
        }
        kept = [
            name
            for name, (quality, joules) in points.items()
            if not any((q <= quality and j <= joules) and (q < quality or j < joules) for q, j in points.values())
        ]
        return sorted(kept, key=lambda name: points[name][1])

    def decision(self) -> str:
        chosen = self.recommended()
        if chosen is None:
            return f"No artifact measured for speed is within +{self.budget:g}% perplexity of the FP32 model."
        shape = self.shapes[0]
        artifact = next(a for a in self.artifacts if a.name == chosen)
        line = (
            f"Deploy {chosen}: perplexity {artifact.perplexity:.2f} ({100 * artifact.perplexity_change:+.1f}% vs FP32, "
            f"budget +{self.budget:g}%)"
        )
        ratios = shape.ratios.get(chosen, {})
        for label, words in (("vs_torch_fp32", "PyTorch FP32 eager"), ("vs_fastest_fp32", shape.fastest_fp32)):
            ratio = ratios.get(f"{label}:time_per_output_token_ms")
            if ratio:
                line += f"; time per output token {_ratio(ratio)} of {words}'s"
        energy = ratios.get("vs_torch_fp32:joules_per_generated_token")
        if energy:
            line += f"; decode energy per token {_ratio(energy)} of PyTorch FP32's ({self.energy['method']})"
        first_token = ratios.get("vs_fastest_fp32:time_to_first_token_ms")
        if first_token:
            line += f"; time to first token {_ratio(first_token)} of {shape.fastest_fp32}'s"
        line += f", at prompt {shape.shape['prompt_tokens']}, batch {shape.shape['batch_size']}."
        cheapest = self.cheapest()
        if cheapest != chosen:
            slower = self.slower_first_token(cheapest)
            joules = (
                shape.results[cheapest]["joules_per_generated_token"]
                / shape.results[chosen]["joules_per_generated_token"]
            )
            why = (
                f"its first token takes {_ratio(slower)} of {shape.fastest_fp32}'s: the decision keeps the first token "
                "no slower"
                if slower
                else f"its saving against {shape.fastest_fp32} is within this measurement's noise"
            )
            line += (
                f" {cheapest} spends less per generated token ({joules:.2f}x this choice's, {self.energy['method']}) "
                f"but {why}."
            )
        elif self.slower_first_token(chosen):
            line += f" Every candidate within the budget is slower than {shape.fastest_fp32} to its first token."
        return line


def _ratio(interval: dict) -> str:
    return f"{interval['ratio']:.2f}x [{interval['low']:.2f}, {interval['high']:.2f}]"


def write_generation_reports(report: GenerationReport, run_dir: Path) -> None:
    write_text_atomic(run_dir / "report.json", json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    write_text_atomic(run_dir / "report.md", markdown(report))


def markdown(report: GenerationReport) -> str:
    energy = report.energy
    method = energy["method"]
    estimate = "" if energy["measured"] else " (an estimate from CPU time, not a measurement)"
    gguf = report.model.get("gguf")
    lines = [
        f"# {report.recipe}: text generation",
        "",
        f"**Decision.** {report.decision()}",
        "",
        f"- Model: {report.model['description']}, {report.model['parameters']:,} parameters."
        + (
            f" Its weights were rounded once before (GGUF file {gguf['file']}, sha256 {gguf['sha256'][:12]}...): "
            "the FP32 reference is that model dequantized."
            if gguf
            else ""
        ),
        f"- Text: {report.corpus}. Perplexity on {report.perplexity_setting['windows']} windows of "
        f"{report.perplexity_setting['window']} tokens, stride {report.perplexity_setting['stride']} "
        f"({report.perplexity_setting['tokens']} tokens scored); calibration never saw them."
        + (f" Continuation agreement: {report.continuations}." if report.continuations else ""),
        f"- CPU: {report.cpu['model']}, {report.threads} threads; flags: {', '.join(report.cpu['flags']) or 'none'}.",
        f"- Energy: {energy['method']}{estimate}; {energy['why']}.",
        f"- Runtimes: {', '.join(report.runtimes)}"
        + "".join(f"; {name} left out: {why}" for name, why in report.runtimes_left_out.items())
        + ".",
        f"- Run took {report.seconds:.0f} s; created {report.created_utc}.",
        "",
        "## Quality (each on the file its runtime runs)",
        "",
        "| artifact | precision | perplexity | vs FP32 | next-token agreement | continuation agreement | size | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in report.artifacts:
        continuation = "" if a.continuation_agreement is None else f"{a.continuation_agreement:.1%}"
        size = "" if a.size_bytes is None else f"{a.size_bytes / 1e6:.0f} MB"
        lines.append(
            f"| {a.name} | {a.precision} | {a.perplexity:.2f} | {100 * a.perplexity_change:+.1f}% | "
            f"{a.next_token_agreement:.1%} | {continuation} | {size} | {a.note or ''} |"
        )
    for index, shape in enumerate(report.shapes):
        s = shape.shape
        lines += [
            "",
            f"## Generation: batch {s['batch_size']}, prompt {s['prompt_tokens']} tokens, {s['new_tokens']} new tokens",
            "",
            f"Medians over {next(iter(shape.results.values()))['rounds']} interleaved rounds of new prompts; decode "
            f"figures leave out each query's first {next(iter(shape.results.values()))['warmup_steps']} steps. Ratios "
            "are paired by round with 95% intervals." + (f" Memory: {report.memory}." if report.memory else ""),
            "",
            f"| artifact | TTFT ms | TPOT ms p50 / p90 / p99 | tokens/s | J/prompt token ({method}) | "
            f"J/generated token ({method}) | Wh/1000 queries ({method}) | TPOT vs PyTorch FP32 | "
            f"TPOT vs {shape.fastest_fp32} | J/token vs PyTorch FP32 ({method}) | "
            f"TTFT vs {shape.fastest_fp32} |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in shape.results.items():
            tpot = r["time_per_output_token_ms"]
            ratios = shape.ratios.get(name, {})
            cells = [
                _ratio(ratios[key]) if key in ratios else "-"
                for key in (
                    "vs_torch_fp32:time_per_output_token_ms",
                    "vs_fastest_fp32:time_per_output_token_ms",
                    "vs_torch_fp32:joules_per_generated_token",
                    "vs_fastest_fp32:time_to_first_token_ms",
                )
            ]
            lines.append(
                f"| {name} | {r['time_to_first_token_ms']:.1f} | "
                f"{tpot['p50']:.1f} / {tpot['p90']:.1f} / {tpot['p99']:.1f} | "
                f"{r['tokens_per_s']:.1f} | {r['joules_per_prompt_token']:.4f} | "
                f"{r['joules_per_generated_token']:.4f} | "
                f"{r['wh_per_1000_queries']:.3f} | {' | '.join(cells)} |"
            )
        lines += [f"- {name}: not measured at this shape: {why}" for name, why in shape.left_out.items()]
        lines += [
            "",
            f"Perplexity against decode energy: the front (no other model has both lower perplexity and fewer J per "
            f"generated token, {method}):",
            "",
            "| artifact | perplexity vs FP32 | J/generated token | continuation agreement | structure removed |",
            "|---|---|---|---|---|",
        ]
        by_name = {a.name: a for a in report.artifacts}
        for name in report.front(index):
            a = by_name[name]
            agreement = "-" if a.continuation_agreement is None else f"{100 * a.continuation_agreement:.1f}%"
            joules = shape.results[name]["joules_per_generated_token"]
            lines.append(
                f"| {name} | {100 * a.perplexity_change:+.1f}% | {joules:.4f} | {agreement} "
                f"| {'; '.join(a.structure_removed) or 'none'} |"
            )
        if shape.dense_twins:
            lines += ["", "Against the dense model at the same precision on the same runtime (paired by round):", ""]
            quality = {a.name: a.perplexity_change for a in report.artifacts}
            for name, twin in shape.dense_twins.items():
                ratios = shape.ratios.get(name, {})
                figures = [
                    f"{words} {_ratio(ratios[f'vs_dense:{figure}'])}"
                    for figure, words in (
                        ("time_per_output_token_ms", "TPOT"),
                        ("joules_per_generated_token", f"J/generated token ({method})"),
                        ("time_to_first_token_ms", "TTFT"),
                    )
                    if f"vs_dense:{figure}" in ratios
                ]
                lines.append(
                    f"- {name} against {twin}: {', '.join(figures)}; perplexity "
                    f"{100 * quality[name]:+.1f}% against {100 * quality[twin]:+.1f}% (vs FP32)"
                )
        if len(report.shapes) > 1:
            best = report.recommended(index)
            lines += [
                "",
                f"At this shape, the least decode energy per generated token within +{report.budget:g}% perplexity, "
                f"its first token no slower than the fastest FP32 runtime's where any is: "
                + (f"**{best}**." if best else "none."),
            ]
    if report.gates:
        lines += ["", "## Gates", ""]
        lines += [
            f"- {'passed' if g['passed'] else 'FAILED'}: {g['gate']} on {g['comparison']}: {g['detail']}"
            for g in report.gates
        ]
    lines += ["", "## How each model was made", ""]
    for a in report.artifacts:
        if a.stage and a.runtime == report.runtimes[0]:
            lines.append(
                f"- {a.model}: " + ", ".join(f"{k} {v}" for k, v in a.stage.items() if k != "left_as_they_were")
            )
    for name, build in report.builds.items():
        runtime = build.get("runtime")  # how a runtime reading another's file runs it (OpenVINO)
        arithmetic = (
            f"MatMulNBits accuracy_level {build['accuracy_level']}" if build["accuracy_level"] and not runtime else ""
        )
        built = f"{build['builder']} ({', '.join(filter(None, (build['precision'], arithmetic)))})"
        if runtime:
            how = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in runtime.items())
            lines.append(f"- {name}: the file built by {built}, run by {name.rpartition('@')[2]}: {how}")
        else:
            head = f"; output head: {build['head']}" if build.get("head") else ""
            lines.append(f"- {name}: built by {built}{head}")
    return "\n".join(lines) + "\n"


def perplexity_gates(budget: float | None, artifacts: tuple[GeneratedArtifact, ...]) -> tuple[dict, ...]:
    """`gates.max_perplexity_increase` (percent) on every rounded model on every runtime; none when unset."""
    if budget is None:
        return ()
    return tuple(
        {
            "gate": "max_perplexity_increase",
            "comparison": f"{a.name} vs fp32@torch",
            "threshold": budget,
            "value": 100 * a.perplexity_change,
            "passed": 100 * a.perplexity_change <= budget,
            "detail": f"perplexity {100 * a.perplexity_change:+.2f}% (budget +{budget:g}%)",
        }
        for a in artifacts
        if a.model != "fp32"
    )
