"""The command line only: parse, call the API, print.

Exit codes: 0 ok, 2 bad input, 3 a quality gate failed, 4 export parity broken, 130 interrupted.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from greencompress.core import __version__
from greencompress.core.errors import GreencompressError
from greencompress.core.files import log_to_file

console = Console(stderr=True)
stdout = Console()
PLAIN_WIDTH = 1_000  # columns when standard output is not a terminal: wide enough that no name is cut
COMPARE_BLOCKS_BELOW = 100  # columns: a narrower terminal gets `compare` as one block per artifact
log = logging.getLogger("greencompress")

_override_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="Override a recipe field, value as YAML (e.g. --set benchmark.batch_sizes=[1]). Repeatable.",
)


@click.group()
@click.version_option(__version__, prog_name="greencompress")
def cli() -> None:
    """Compress a pretrained PyTorch model from a YAML recipe, and prove the saving."""
    if not stdout.is_terminal:
        # Piped or captured (CI logs, `| tee`): plain text at the tables' full width, never cut to 80 columns.
        stdout.width = PLAIN_WIDTH


@cli.command()
@click.argument("recipe_path", type=click.Path(path_type=Path), required=False)
@click.option(
    "--output",
    "output_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for run folders (default: the recipe's output.dir, 'runs').",
)
@_override_option
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Continue an interrupted run in this run folder, reusing its finished stages.",
)
@click.option("--quiet", is_flag=True, help="No progress or tables; errors and the run folder only.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to standard output instead of tables.")
@click.option("--screenshot", is_flag=True, help="Also save report.png, report.html shown in headless Chromium.")
@click.option(
    "--details", is_flag=True, help="Also print every table and note (shown anyway where the terminal is wide enough)."
)
def run(
    recipe_path: Path | None,
    output_dir: Path | None,
    overrides: tuple[str, ...],
    resume_dir: Path | None,
    quiet: bool,
    as_json: bool,
    screenshot: bool,
    details: bool,
) -> None:
    """Run RECIPE: export, compress, measure before/after, and write the report.

    Exit codes: 0 ok, 2 bad input, 3 a quality gate failed, 4 export parity broken, 130 interrupted.
    """
    import json

    from greencompress.compress import distributed
    from greencompress.pipeline.execute import run as run_pipeline
    from greencompress.pipeline.execute import serve_fine_tuning
    from greencompress.pipeline.folder import create_run_dir
    from greencompress.pipeline.gates import GateFailed
    from greencompress.pipeline.prepare import preflight

    if quiet or as_json:
        logging.getLogger().handlers[0].setLevel(logging.WARNING)
    if resume_dir is not None:
        if recipe_path is not None or overrides:
            raise click.UsageError("--resume takes the recipe saved in the run folder: give no RECIPE and no --set")
        recipe = _load_recipe(resume_dir / "recipe.resolved.yaml")
        run_dir = resume_dir
    elif recipe_path is None:
        raise click.UsageError("give a RECIPE, or --resume RUN_DIR")
    else:
        recipe = _load_recipe(recipe_path, overrides)
        run_dir = None
    under_torchrun = distributed.init_from_environment()
    if under_torchrun and not distributed.is_main():
        # Under torchrun, ranks other than 0 only lend a hand with fine-tuning; rank 0 writes and reports.
        logging.getLogger().handlers[0].setLevel(logging.WARNING)
        try:
            serve_fine_tuning(recipe)
        finally:
            distributed.shutdown()
        # A helping rank writes nothing; leaving without the interpreter's teardown avoids the C++ abort seen at
        # exit in CI ("terminate called without an active exception", a joinable native thread destroyed).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    if run_dir is None:
        preflight(recipe)  # what the recipe points at is opened before a run folder is made: nothing is left behind
    run_dir = run_dir or create_run_dir(recipe, output_dir)
    with log_to_file(run_dir / "run.log"):
        log.info("%s run folder: %s", "resuming" if resume_dir else "new", run_dir)
        with _progress(disable=quiet or as_json) as progress:
            try:
                report = run_pipeline(recipe, run_dir, recipe_path=recipe_path, progress=progress)
            finally:
                distributed.shutdown()  # under torchrun; nothing to do in one process
        if screenshot:
            from greencompress.report.screenshot import screenshot_html

            screenshot_html(run_dir / "report.html", run_dir / "report.png")
    if getattr(report, "kind", None) == "text-generation 1.0":  # a language model's report (report/generation.py)
        if as_json:
            stdout.print_json(json.dumps(report.to_dict(), default=str))
        else:
            if not quiet:
                stdout.print((run_dir / "report.md").read_text(encoding="utf-8"), markup=False, soft_wrap=True)
            stdout.print(f"Report: {run_dir / 'report.md'}\nRun folder: {run_dir}", soft_wrap=True, markup=False)
        if not report.gates_passed:
            failed = [f"{g['gate']} on {g['comparison']}: {g['detail']}" for g in report.gates if not g["passed"]]
            raise GateFailed("quality gate failed: " + "; ".join(failed))
        _leave_if_torchrun(under_torchrun)
        return
    if as_json:
        stdout.print_json(json.dumps(report.to_dict()))
    elif quiet:
        stdout.print(str(run_dir), soft_wrap=True, markup=False, highlight=False)
    else:
        _print_summary(report, details)
    if not report.gates_passed:
        failed = [f"{gate.gate} on {gate.comparison}: {gate.detail}" for gate in report.gates if not gate.passed]
        raise GateFailed("quality gate failed (reports are written):\n  " + "\n  ".join(failed))
    _leave_if_torchrun(under_torchrun)


def _leave_if_torchrun(under_torchrun: bool) -> None:
    """Rank 0 under torchrun, its reports written and printed: leave without the interpreter's teardown, as the
    helping ranks do. In CI a finished rank 0 once aborted at exit ("terminate called without an active exception":
    a joinable native thread destroyed), turning a complete run into a failed torchrun job."""
    if under_torchrun:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _print_summary(report, details: bool = False) -> None:
    """The decision first, then the recommendation, gates and where the reports are; the tables where they fit."""
    from greencompress.report.markdown import (
        artifact_table,
        carbon_legend,
        carbon_table,
        comparison_table,
        decision_lines,
        energy_legend,
        headline,
        headline_comparisons,
        plain_findings,
        recommendation_note,
        recommendation_table,
        runtime_table,
    )

    runtimes, recommendation = runtime_table(report), recommendation_table(report)
    tables = [
        _rich_table("Results (all columns in report.md)", artifact_table(report, compact=True)),
        _rich_table("Carbon", carbon_table(report)),
        _rich_table(
            f"Compressed vs baseline: same runtime, hardware, batch size (energy: {report.energy_meter.method})",
            comparison_table(report),
        ),
        *(
            [
                _rich_table(
                    f"The same model on each runtime (where to deploy it; energy: {report.energy_meter.method})",
                    runtimes,
                )
            ]
            if runtimes is not None
            else []
        ),
        *([_rich_table("Deployment recommendation", recommendation)] if recommendation is not None else []),
    ]
    details = details or all(_fits(table) for table in tables)
    # The first line is the decision: what to deploy, and what it saves against the model as the user gave it.
    for line in decision_lines(report):
        stdout.print(f"[bold]{escape(line)}.[/]", soft_wrap=True)
    if details:
        stdout.print(tables[0])
        stdout.print(escape(energy_legend(report)), soft_wrap=True)
        stdout.print(tables[1])
        stdout.print(escape(carbon_legend(report)), soft_wrap=True)
        for table in tables[2:]:
            stdout.print(table)
        for comparison in headline_comparisons(report):
            stdout.print(
                f"[bold]{escape(headline(comparison, report.energy_meter.proportional_to))}[/]", soft_wrap=True
            )
        for finding in plain_findings(report):
            stdout.print(f"[bold yellow]Note:[/] {escape(finding)}", soft_wrap=True)
    stdout.print(escape(recommendation_note(report)), soft_wrap=True)
    for gate in report.gates:
        status = "[green]pass[/]" if gate.passed else "[bold red]FAIL[/]"
        stdout.print(f"Gate {gate.gate}: {status} ({escape(gate.comparison)}: {escape(gate.detail)})", soft_wrap=True)
    if not details:
        notes = len(plain_findings(report))
        stdout.print(
            f"Tables{f' and {notes} notes' if notes else ''}: report.md, or `greencompress run --details`.",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
    from greencompress.report.markdown import deploy_folder

    run_dir = report.run_dir
    folder = deploy_folder(report, report.decisions[0].candidate) if report.decisions else None
    where = f"\nTo deploy: {run_dir / folder} (its README.md shows how to load it)" if folder else ""
    stdout.print(
        f"Report: {run_dir / 'report.md'} (and report.html)\nRun folder: {run_dir}{where}",
        soft_wrap=True,
        markup=False,
        highlight=False,
    )


def _load_recipe(path: Path, overrides=()):
    """The recipe with its `search:` section validated too, as every command reads it."""
    from greencompress.pipeline.recipe import load_recipe
    from greencompress.search.spec import SearchRecipe

    return load_recipe(path, list(overrides), schema=SearchRecipe)


def _fits(table: Table) -> bool:
    """Whether `table` fits the console at its natural width (no column squeezed)."""
    from rich.measure import Measurement

    # Measured as if unbounded: a measurement is otherwise clamped to the console's width.
    natural = Measurement.get(stdout, stdout.options.update(width=PLAIN_WIDTH, max_width=PLAIN_WIDTH), table).maximum
    return natural <= stdout.width


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--screenshot", is_flag=True, help="Also save report.png, report.html shown in headless Chromium.")
def report(run_dir: Path, screenshot: bool) -> None:
    """Render report.md and report.html again from RUN_DIR/report.json (e.g. after an upgrade)."""
    from greencompress.report import load_report, write_reports

    loaded = load_report(run_dir)
    write_reports(loaded, run_dir)
    if screenshot:
        from greencompress.report.screenshot import screenshot_html

        screenshot_html(run_dir / "report.html", run_dir / "report.png")
    stdout.print(f"rendered {run_dir / 'report.md'} and {run_dir / 'report.html'}", soft_wrap=True, markup=False)


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--force", is_flag=True, help="Compare runs measured on different hardware, threads or meters (rows are marked)."
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["terminal", "markdown", "html"]),
    default="terminal",
    show_default=True,
)
def compare(run_dirs: tuple[Path, ...], force: bool, output_format: str) -> None:
    """Compare RUN_DIRS side by side, with deltas against the first."""
    from greencompress.report import load_report
    from greencompress.report.compare import compare_runs, render_comparison

    comparison = compare_runs([load_report(path) for path in run_dirs], force=force)
    if output_format == "terminal":
        if stdout.width >= COMPARE_BLOCKS_BELOW:
            stdout.print(_rich_table("Runs compared with the first", (comparison.headers, comparison.rows)))
        else:  # eleven columns do not fit: one block per artifact and run, one figure a line
            for row in comparison.rows:
                stdout.print(
                    "\n".join(
                        [
                            f"{row[1]} (run {row[0]}, batch {row[2]})",
                            *[f"  {header}: {cell}" for header, cell in zip(comparison.headers[3:], row[3:]) if cell],
                        ]
                    ),
                    soft_wrap=True,
                    markup=False,
                    highlight=False,
                )
        for mismatch in comparison.mismatches:
            stdout.print(f"[bold yellow]Forced:[/] {escape(mismatch)}", soft_wrap=True)
    else:
        click.echo(render_comparison(comparison, output_format))


@cli.command()
@click.argument("recipe_path", type=click.Path(path_type=Path))
@_override_option
def validate(recipe_path: Path, overrides: tuple[str, ...]) -> None:
    """Check RECIPE and what it points at (model folder or checkpoint, data file, meters) without running anything."""
    from greencompress.pipeline.prepare import preflight

    recipe = _load_recipe(recipe_path, overrides)
    preflight(recipe)
    stages = " -> ".join(stage.technique for stage in recipe.stages)
    searched = (
        f"; search varies {', '.join(recipe.search.space.dimensions())} for {', '.join(recipe.search.objective_names)}"
        if recipe.search
        else ""
    )
    if recipe.search and recipe.search.space.runtime:
        searched += f", each trial on the cheapest of {', '.join(recipe.search.space.runtime)}"
    stdout.print(
        f"{recipe_path}: valid recipe '{recipe.name}' ({recipe.model.source} model, "
        f"{recipe.data.kind} data, stages: {stages}{searched})",
        soft_wrap=True,
        markup=False,
    )


@cli.command()
@click.option(
    "--model",
    "model_path",
    required=True,
    type=click.Path(path_type=Path),
    help="A Hugging Face model folder (or zip), or a checkpoint file (with --architecture).",
)
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(path_type=Path),
    help="A text file (CSV, TSV, JSONL) or an image folder with split folders (train/, val/ or test/).",
)
@click.option("--task", default=None, help="The model's task; inferred from a Hugging Face config when left out.")
@click.option(
    "--architecture",
    default=None,
    help="For a checkpoint: a torchvision model name, or file.py:function building the model.",
)
@click.option(
    "--output",
    "output_path",
    type=click.Path(path_type=Path),
    default=Path("recipe.yaml"),
    show_default=True,
    help="Where the recipe is written (never over an existing file).",
)
def init(model_path: Path, data_path: Path, task: str | None, architecture: str | None, output_path: Path) -> None:
    """Write a commented recipe for your model and data, checked as `validate` checks one."""
    from greencompress.pipeline.draft import draft_recipe
    from greencompress.pipeline.prepare import preflight
    from greencompress.pipeline.recipe import load_recipe

    if output_path.exists():
        raise GreencompressError(f"--output: {output_path} exists; give another path (init never overwrites)")
    draft = draft_recipe(model_path, data_path, task, architecture)
    output_path.write_text(draft.text)
    try:
        preflight(load_recipe(output_path))
    except GreencompressError:
        output_path.unlink()  # nothing is left behind by a draft that would not run
        raise
    for fact in draft.inferred:
        stdout.print(f"inferred: {fact}", soft_wrap=True, markup=False, highlight=False)
    stdout.print(f"wrote {output_path}; next: greencompress run {output_path}", soft_wrap=True, markup=False)


@cli.command()
@click.argument("recipe_path", type=click.Path(path_type=Path))
@click.option(
    "--output",
    "output_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the search folder goes (default: the recipe's output.dir); it is <output>/<name>-search.",
)
@_override_option
@click.option(
    "--storage",
    default=None,
    metavar="URL",
    help="Optuna storage shared by every process of the search (default: sqlite in the search folder); "
    "e.g. postgresql://user@host/db for workers on several machines.",
)
@click.option(
    "--worker", is_flag=True, help="Only run trials of the shared study; leave the summary to the first process."
)
@click.option(
    "--report",
    "report_only",
    is_flag=True,
    help="Run no trial: write the summary (front, table, best.yaml) of the study as it stands.",
)
@click.option("--quiet", is_flag=True, help="No progress bars; the summary at the end.")
def search(
    recipe_path: Path,
    output_dir: Path | None,
    overrides: tuple[str, ...],
    storage: str | None,
    worker: bool,
    report_only: bool,
    quiet: bool,
) -> None:
    """Search RECIPE's search: space for the lowest J/inference (a language model's: J per generated token)
    within the quality budget.

    Every trial is an ordinary run in <output>/<name>-search/trials/. Run the same command again
    to continue a stopped search; finished trials are not run again.
    """
    from greencompress.search.study import Search, default_storage, search_folder
    from greencompress.search.summary import summarize, write_summary

    recipe = _load_recipe(recipe_path, overrides)
    folder = search_folder(recipe, output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with log_to_file(folder / ("worker.log" if worker else "search.log")):
        with _progress(disable=quiet) as progress:
            session = Search(recipe, folder, storage or default_storage(folder), progress, worker=worker)
            if not report_only:
                session.optimize()
        if worker:
            stdout.print(f"worker done: {session.finished_trials()} trials of the study finished", highlight=False)
            return
        summary = summarize(session.study, recipe.search, recipe.search_budget())
        if recipe.task.workload_kind == "generate":  # the front's models measured again, together
            from greencompress.search.remeasure import remeasure_front

            with _progress(disable=quiet) as progress:
                again, shape = remeasure_front(recipe, summary, progress)
            summary = summarize(session.study, recipe.search, recipe.search_budget(), again, shape)
        best = write_summary(summary, folder)
    from greencompress.search.summary import energy_method_text, table_rows

    headers, rows = table_rows(summary, compact=True)
    table = Table(title=f"search: {recipe.name}", title_justify="left")
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    stdout.print(table)
    unit = "J/generated token" if summary.generating else "J/inference"
    stdout.print(f"{unit}: {escape(energy_method_text(summary))}", highlight=False)
    stdout.print(escape(summary.verdict), highlight=False)
    stdout.print(
        f"search folder: {folder}" + (f"; best recipe: {best}" if best else ""), highlight=False, soft_wrap=True
    )


@cli.command()
def meters() -> None:
    """Show which energy meters work on this machine, which one each domain uses, and why."""
    from greencompress.measure.energy import EnergySpec, probe_meters

    for domain, choice in probe_meters(EnergySpec()).items():
        active = choice.meter.method if choice.meter else "none: not reported"
        stdout.print(f"[bold]{domain}[/]: {active}")
        for method, status in choice.considered:
            stdout.print(f"  {method}: {escape(status)}", soft_wrap=True)
        if choice.meter:
            for assumption in choice.meter.describe().assumptions:
                stdout.print(f"    - {escape(assumption)}", soft_wrap=True)


@cli.group()
def cache() -> None:
    """Show or empty the cache of built models and reusable stage outputs."""


@cache.command("list")
def cache_list() -> None:
    """Every cache entry, least recently used first, with its size."""
    from datetime import datetime

    from greencompress.core.cache import cache_dir, cache_entries, max_cache_bytes

    entries = cache_entries()
    rows = [
        [
            entry.kind,
            entry.description,
            f"{entry.size_bytes / 1e6:.1f}",
            datetime.fromtimestamp(entry.last_used).strftime("%Y-%m-%d %H:%M"),
            str(entry.path),
        ]
        for entry in entries
    ]
    total = sum(entry.size_bytes for entry in entries)
    stdout.print(
        _rich_table(
            f"{cache_dir()}: {total / 1e6:.1f} MB of {max_cache_bytes() / 1024**3:g} GiB cap",
            (["kind", "what", "MB", "last used", "path"], rows),
        )
    )


@cache.command("clear")
def cache_clear() -> None:
    """Remove every cache entry (built-in models are trained again on next use)."""
    from greencompress.core.cache import cache_dir, clear_cache

    removed = clear_cache()
    stdout.print(
        f"removed {len(removed)} entries ({sum(e.size_bytes for e in removed) / 1e6:.1f} MB) from {cache_dir()}",
        soft_wrap=True,
        markup=False,
        highlight=False,
    )


class _RegistryChoice(click.ParamType):
    """A choice among a registry's names, read when the command runs (so plugins are included)."""

    def __init__(self, names, extra: tuple[str, ...] = ()):
        self.names, self.extra = names, extra
        self.name = "choice"

    def convert(self, value, param, ctx):
        choices = [*self.extra, *self.names()]
        if value not in choices:
            self.fail(f"{value!r} is not one of {', '.join(choices)}", param, ctx)
        return value


def _runtime_names() -> list[str]:
    from greencompress.runtimes import RUNTIMES

    return RUNTIMES.names()


def _meter_names() -> list[str]:
    from greencompress.measure.energy import METERS

    return METERS.names()


@cli.command()
@click.argument("model")
@click.option(
    "--input-size",
    type=click.IntRange(min=8),
    default=224,
    show_default=True,
    help="Height and width of the random inputs, where the model does not fix them.",
)
@click.option("--batch-sizes", default=None, help="Comma-separated batch sizes (default: the recipe default, 1,8).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads (default: the recipe's).")
@click.option("--window-s", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--windows", type=click.IntRange(min=2), default=None)
@click.option(
    "--meter",
    type=_RegistryChoice(_meter_names, ("auto",)),
    default=None,
    help="An energy meter (`greencompress meters`); default auto.",
)
@click.option(
    "--runtime",
    type=_RegistryChoice(_runtime_names),
    default=None,
    help="Only this runtime. Default: for an .onnx MODEL every installed runtime that runs files, side by "
    "side; for a torchvision name, torch.",
)
@click.option("--device", default=None, help="cpu (default), cuda, cuda:N or auto: where MODEL runs and is measured.")
@click.option(
    "--gpu-power-limits",
    default=None,
    metavar="W,W,...",
    help="On a GPU: measure again at each power limit in watts (needs root; the limit is restored after).",
)
@click.option(
    "--sequence-length",
    type=click.IntRange(min=1),
    default=128,
    show_default=True,
    help="Tokens per input, for a file whose inputs are token ids (a transformer).",
)
def bench(
    model: str,
    input_size: int,
    batch_sizes: str | None,
    threads: int | None,
    window_s: float | None,
    windows: int | None,
    meter: str | None,
    runtime: str | None,
    device: str | None,
    gpu_power_limits: str | None,
    sequence_length: int,
) -> None:
    """Measure latency and energy of MODEL on this machine: an .onnx file, a run's deploy folder, a Hugging Face model
    folder (exported to ONNX first) or a torchvision model name."""
    from pydantic import ValidationError

    from greencompress.bench import bench as run_bench
    from greencompress.measure.benchmark import BenchmarkSpec
    from greencompress.measure.energy import EnergySpec
    from greencompress.report.markdown import benchmark_cells

    try:
        limits = [float(w) for w in gpu_power_limits.split(",")] if gpu_power_limits else None
    except ValueError:
        raise click.BadParameter(
            f"{gpu_power_limits!r}: expected watts separated by commas", param_hint="--gpu-power-limits"
        ) from None
    try:
        sizes = [int(size) for size in batch_sizes.split(",")] if batch_sizes is not None else None
    except ValueError:
        raise click.BadParameter(
            f"{batch_sizes!r}: expected positive integers separated by commas", param_hint="--batch-sizes"
        ) from None
    try:
        # Only what was given: the recipe's own defaults fill the rest (options left out are None and dropped).
        given = {"batch_sizes": sizes, "window_s": window_s, "windows": windows, "threads": threads, "device": device}
        if device is not None and device != "cpu":
            given["runtimes"] = [runtime] if runtime else "auto"  # the GPU's runtimes, not the CPU's
        given = {key: value for key, value in given.items() if value is not None}
        if windows is not None:
            given["max_windows"] = max(windows, BenchmarkSpec.model_fields["max_windows"].default)
        benchmark = BenchmarkSpec(**given)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in error.errors()
        )
        raise GreencompressError(f"bench: {problems}") from None
    energy = EnergySpec(**({"meter": meter} if meter is not None else {}))
    with _progress() as progress:
        result = run_bench(
            model,
            input_size,
            benchmark,
            energy,
            progress=progress,
            runtime=runtime,
            power_limits_w=limits,
            sequence_length=sequence_length,
        )
    if result.by_power_limit:
        _print_power_limits(result)
    headers = [
        "runtime",
        "batch",
        "p50 ms",
        "p99 ms",
        "items/s",
        f"J/inf ({result.meter.method})",
        "95% CI",
        "active J/inf",
    ]
    rows = [
        [name, str(b.latency.batch_size), *benchmark_cells(b)]
        for name, benches in result.by_runtime.items()
        for b in benches
    ]
    stdout.print(
        _rich_table(
            f"{model}, input {result.input_shape}, {benchmark.threads} threads; runtimes measured in "
            f"the same interleaved rounds",
            (headers, rows),
        )
    )
    kind = "measured" if result.meter.measured else "ESTIMATED, not measured"
    band = result.benchmarks[0].energy.uncertainty
    idle = ", ".join(f"{domain} {watts:.2f} W" for domain, watts in result.idle.power_w.items())
    stdout.print(
        escape(f"Energy: {result.meter.method} ({kind}); {band.basis}; idle {idle}; {result.meter_reason}."),
        soft_wrap=True,
    )


@cli.command()
def plugins() -> None:
    """Every registered task, technique, runtime and meter, and where each comes from (greencompress or a package)."""
    from greencompress.compress.technique import TECHNIQUES
    from greencompress.measure.energy import METERS
    from greencompress.models.tasks import TASKS
    from greencompress.runtimes import RUNTIMES

    rows = []
    for kind, registry, describe in (
        ("task", TASKS, lambda t: f"takes {', '.join(t.sources)} models, {', '.join(t.data_kinds)} data"),
        (
            "technique",
            TECHNIQUES,
            lambda t: f"works on the {t.works_on} model" if t.works_on == "torch" else f"works on an {t.works_on} file",
        ),
        (
            "runtime",
            RUNTIMES,
            lambda r: (
                "runs "
                + ("PyTorch models" if r.runs == "torch" else "ONNX files")
                + (f" (unavailable: {reason})" if (reason := r.unavailable()) else "")
            ),
        ),
        ("meter", METERS, lambda m: f"{m.domain} energy" + (", a fallback" if m.fallback else "")),
    ):
        for name in registry.names():
            origin = registry.origin(name)
            rows.append([kind, name, describe(registry.get(name)), origin.package, origin.reference])
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    for row in rows:  # plain columns, never cut short: a script can read them
        stdout.print(
            "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[4]]),
            soft_wrap=True,
            markup=False,
            highlight=False,
        )


def _print_power_limits(result) -> None:
    from greencompress.measure.energy.power_limits import optimal_and_fastest

    rows, measured = [], []
    for limit, by_runtime in result.by_power_limit:
        for name, benches in by_runtime.items():
            for bench in benches:
                rows.append(
                    [
                        f"{limit.asked_w:g}",
                        f"{limit.in_force_w:g}" + ("" if limit.applied else " (not set)"),
                        name,
                        str(bench.latency.batch_size),
                        f"{bench.latency.p50_ms:.3f}",
                        f"{bench.joules_per_inference:.4g}",
                    ]
                )
                measured.append(
                    {
                        "limit_w": limit.in_force_w,
                        "runtime": name,
                        "batch": bench.latency.batch_size,
                        "p50_ms": bench.latency.p50_ms,
                        "j_per_inference": bench.joules_per_inference,
                    }
                )
    stdout.print(
        _rich_table(
            "GPU power limits",
            (["asked W", "in force W", "runtime", "batch", "p50 ms", f"J/inf ({result.meter.method})"], rows),
        )
    )
    for limit, _ in result.by_power_limit:
        if not limit.applied:
            stdout.print(f"[bold yellow]Note:[/] {escape(limit.reason)}", soft_wrap=True)
    for key in sorted({(row["runtime"], row["batch"]) for row in measured}):
        optimal, fastest = optimal_and_fastest([row for row in measured if (row["runtime"], row["batch"]) == key])
        stdout.print(
            f"{key[0]}, batch {key[1]}: least energy at {optimal['limit_w']:g} W "
            f"({optimal['j_per_inference']:.4g} J/inf, {optimal['p50_ms']:.3f} ms); fastest at "
            f"{fastest['limit_w']:g} W ({fastest['p50_ms']:.3f} ms)",
            soft_wrap=True,
            markup=False,
        )


def _progress(disable: bool = False) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=disable,
    )


def _rich_table(title: str, table) -> Table:
    headers, rows = table
    rendered = Table(title=title)
    for header in headers:
        rendered.add_column(header, overflow="fold")  # a name too long for its column wraps; it is never cut
    for row in rows:
        rendered.add_row(*row)
    return rendered


def _stop_on_sigterm(signum, frame) -> None:
    # A CI job or `kill` sends SIGTERM: stop as on Ctrl-C, so what finished is written and marked incomplete.
    raise KeyboardInterrupt


def main() -> None:
    """Console-script entry point: user errors become a message and exit code, not a traceback."""
    import signal

    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    logging.basicConfig(
        level=logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    logging.getLogger().setLevel(logging.DEBUG)
    logging.getLogger().handlers[0].setLevel(logging.INFO)
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        cli.main(standalone_mode=False)
    except GreencompressError as error:
        console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
        console.print("interrupted: the run folder keeps what was written so far")
        sys.exit(130)
