"""The search loop on Optuna: sample a point, test it cheaply, run it as an ordinary run, record what it measured.

Storage is an Optuna RDB URL (SQLite by default, in the search folder), so a search stopped with
Ctrl-C continues where it was with the same command, and several processes (`--worker`), on one
machine or many, share one study. Their timing windows never overlap on one machine: every run and
every proxy measurement holds the machine's measurement lock (measure/lock.py) while it times.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

from greencompress.core.config import BASE_DIR_KEY
from greencompress.core.errors import GreencompressError
from greencompress.core.files import log_to_file
from greencompress.pipeline.recipe import Recipe, recipe_to_dict
from greencompress.search.trial import (
    host_name,
    missing_stages,
    read_generation_outcome,
    read_outcome,
    recipe_name,
    sample,
    trial_recipe,
    worker_gone,
)

log = logging.getLogger(__name__)

# How a trial's figures are read from its run; a study keeps the trials of one way only.
SCORING = "paired ratio to the anchor, cheapest serving runtime"

# Trial states that count against `budget.max_trials`: finished ones, whichever way they finished, except those
# the proxy turned away in seconds and points drawn again (they count against a cap of PROXY_CAP times the
# budget, so a space where nothing passes the proxy, or that is exhausted, still ends).
FINISHED = ("COMPLETE", "PRUNED")
PROXY_CAP = 4
# Trials in a row that failed with the same error: a fault of the search, not of the points drawn; it stops there
# (failed trials count against no budget, so it would otherwise fail until max_time).
FAILED_ALIKE = 3
TRIAL_ERRORS = (GreencompressError, RuntimeError, ValueError, OSError)  # what fails one trial, not the search


class HopelessTrial(Exception):
    """Raised inside a trial's fine-tuning when its first epoch is too far below the budget to recover."""


def search_folder(recipe: Recipe, output_dir: Path | None) -> Path:
    """`<output>/<recipe name>-search`: stable, so running the same command again resumes the same search."""
    return Path(output_dir or recipe.output.dir) / f"{recipe.name}-search"


def default_storage(folder: Path) -> str:
    return f"sqlite:///{folder.resolve() / 'study.db'}"


def open_study(recipe: Recipe, storage: str, seed: int):
    """The study named after the recipe in `storage`; a different recipe under the same name is refused."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    spec = recipe.search
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna 5; they are what resume relies on
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # A worker that dies stops beating; after the grace period its trial is failed and retried once elsewhere.
        rdb = _connected(
            lambda: RDBStorage(
                storage,
                heartbeat_interval=30,
                grace_period=120,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
        )
    # The budget is a constraint each finished trial sets (Trial.set_constraint); the samplers read it.
    samplers = {
        "nsga2": lambda: optuna.samplers.NSGAIISampler(
            seed=seed, population_size=max(4, min(50, spec.budget.max_trials // 2))
        ),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }
    fingerprint = _fingerprint(recipe)
    # Whichever process comes first creates the study; the others join it.
    study = optuna.create_study(
        study_name=recipe.name,
        storage=rdb,
        directions=spec.directions,
        sampler=samplers[spec.sampler_name](),
        load_if_exists=True,
    )
    if "fingerprint" not in study.user_attrs:
        study.set_user_attr("fingerprint", fingerprint)
        study.set_user_attr("objectives", spec.objective_names)
        study.set_user_attr("scoring", SCORING)
    if study.user_attrs.get("fingerprint") != fingerprint:
        raise GreencompressError(
            f"the study {recipe.name!r} in {storage} was started from a different recipe; "
            "rename the recipe (its name names the study) or give another --storage"
        )
    if study.user_attrs.get("scoring") != SCORING:  # its trials' figures would not compare with new ones
        raise GreencompressError(
            f"the study {recipe.name!r} in {storage} was started by an earlier greencompress that "
            f"scored trials by {study.user_attrs.get('scoring', 'one drawn runtime')}; this one "
            f"scores them by {SCORING}: give another --storage or rename the recipe to start "
            f"afresh"
        )
    return study


def _connected(connect, attempts: int = 5):
    """The storage, once its tables exist: workers started together on an empty database each create them, and all
    but one fail (PostgreSQL on its unique catalogue names, SQLite with "table ... already exists"); those try again
    once the tables are there."""
    import random

    import sqlalchemy.exc

    for attempt in range(1, attempts + 1):
        try:
            return connect()
        except (
            sqlalchemy.exc.IntegrityError,
            sqlalchemy.exc.ProgrammingError,
            sqlalchemy.exc.OperationalError,
        ) as error:
            created_elsewhere = not isinstance(error, sqlalchemy.exc.OperationalError) or "already exists" in str(error)
            if attempt == attempts or not created_elsewhere:
                raise
            log.info(
                "search: the storage's tables were being created by another worker (%s); trying again",
                type(getattr(error, "orig", None) or error).__name__,
            )
            time.sleep(0.2 * attempt + 0.3 * random.random())


def _fingerprint(recipe: Recipe) -> str:
    """A hash of the recipe alone: a later greencompress (or a worker on another machine) may join the study."""
    import hashlib
    import json

    recipe_data = recipe_to_dict(recipe)
    recipe_data.pop("output", None)  # where folders go does not change what a trial measures
    return hashlib.sha256(json.dumps(recipe_data, sort_keys=True).encode()).hexdigest()[:16]


class Search:
    """One process's share of a search: trials until the study's budget is spent or this process's time is up."""

    def __init__(self, recipe: Recipe, folder: Path, storage: str, progress=None, worker: bool = False):
        if recipe.search is None:
            raise GreencompressError("the recipe has no search: section (see recipes/resnet20_cifar10_search.yaml)")
        if problems := missing_stages(recipe, recipe.search):
            raise GreencompressError("; ".join(problems))
        self.recipe, self.spec, self.folder, self.progress = recipe, recipe.search, folder, progress
        self.base = recipe_to_dict(recipe)
        # The first process samples from the recipe's seed (a search on one process is reproducible); each worker
        # from its own, or two workers started together would draw the same points.
        self.study = open_study(recipe, storage, recipe.seed + (os.getpid() if worker else 0))
        self._context = None  # model, data, baseline validation top-1, proxies: loaded on the first trial
        self._failed_alike: str | None = None  # the error that stopped the search, when trials kept failing alike

    def finished_trials(self) -> int:
        """Trials that count against `budget.max_trials`: trained (complete or stopped early); not those turned
        away by the proxy, and not a point drawn again (its results are the first draw's)."""
        return sum(
            1
            for t in self.study.get_trials(deepcopy=False)
            if t.state.name in FINISHED
            and t.user_attrs.get("stopped_by") not in ("proxy", "infeasible")
            and "duplicate_of" not in t.user_attrs
        )

    def budget_spent(self) -> bool:
        screened = sum(1 for t in self.study.get_trials(deepcopy=False) if t.state.name in FINISHED)
        return (
            self.finished_trials() >= self.spec.budget.max_trials or screened >= PROXY_CAP * self.spec.budget.max_trials
        )

    def optimize(self) -> None:
        import optuna

        self._requeue_stopped(self._fail_dead_trials())
        if self.budget_spent():
            log.info(
                "search: %d trials already finished, the budget's %d; nothing to run",
                self.finished_trials(),
                self.spec.budget.max_trials,
            )
            return
        log.info(
            "search: %d of %d trials finished; running until the budget is spent",
            self.finished_trials(),
            self.spec.budget.max_trials,
        )
        # The model and data every trial shares, loaded here and not in the first trial: a failure to load them
        # stops the search once, where inside a trial it would fail every trial Optuna starts, without end.
        self._load()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._failed_alike = None
        self.study.optimize(
            # A candidate that breaks (export parity, a runtime's error) fails alone; a bug in greencompress stops all.
            self._recorded,
            timeout=self.spec.budget.max_time,
            catch=TRIAL_ERRORS,
            callbacks=[self._log_trial, self._stop_when_spent],
        )
        if self._failed_alike is not None:
            raise GreencompressError(
                f"search stopped: the last {FAILED_ALIKE} trials failed with the same error, which no other point of "
                f"the space would avoid: {self._failed_alike} (each trial's run folder and search.log have more)"
            )

    def _stop_when_spent(self, study, trial) -> None:
        if self.budget_spent():
            study.stop()
        elif (why := self._failing_alike()) is not None:
            self._failed_alike = why
            study.stop()

    def _failing_alike(self) -> str | None:
        """The error the last FAILED_ALIKE finished trials all failed with, or None."""
        finished = [t for t in self.study.get_trials(deepcopy=False) if t.state.name != "RUNNING"]
        last = finished[-FAILED_ALIKE:]
        reasons = {t.user_attrs.get("error") for t in last}
        if (
            len(last) < FAILED_ALIKE
            or any(t.state.name != "FAIL" for t in last)
            or len(reasons) != 1
            or None in reasons
        ):
            return None
        return reasons.pop()

    def _fail_dead_trials(self) -> dict[int, str]:
        """Trials still RUNNING whose worker on this host is gone (killed, SIGKILL, a crash): failed; why, by number.

        Optuna's heartbeat finds such a trial only after its grace period, and for workers on other hosts;
        here its process id shows at once that it died. `_requeue_stopped` then runs it again.
        """
        from optuna.trial import TrialState

        dead = {}
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if (why := worker_gone(trial.user_attrs)) is None:
                continue
            self.study.tell(trial.number, state=TrialState.FAIL)
            dead[trial.number] = why
            log.info("search: trial %d: %s; the trial is failed and runs again", trial.number, why)
        return dead

    def _requeue_stopped(self, dead: dict[int, str]) -> None:
        """A trial stopped by Ctrl-C, or whose worker died, runs again first, resuming its run folder if it had one."""
        trials = self.study.get_trials(deepcopy=False)
        requeued = {t.user_attrs.get("retry_of", t.user_attrs.get("resume_number")) for t in trials}
        for trial in trials:
            why = "interrupted" if trial.user_attrs.get("interrupted") else dead.get(trial.number)
            if trial.state.name != "FAIL" or not why or trial.number in requeued:
                continue
            # A worker may die before its trial has a run folder (during the proxy): the retry then starts afresh.
            resume = (
                {"resume_dir": trial.user_attrs["run_dir"], "resume_number": trial.number}
                if "run_dir" in trial.user_attrs
                else {}
            )
            self.study.enqueue_trial(
                trial.params, user_attrs={**resume, "retry_of": trial.number, "retry_of_reason": why}
            )
            log.info(
                "search: trial %d was %s; it runs again first%s",
                trial.number,
                "interrupted" if why == "interrupted" else "left by a dead worker",
                f", resuming {resume['resume_dir']}" if resume else "",
            )

    def _recorded(self, trial) -> list[float]:
        """The trial's objectives; an error that fails it alone is recorded with it (the summary shows it)."""
        try:
            return self._objective(trial)
        except TRIAL_ERRORS as error:
            trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:2000])
            raise

    def _objective(self, trial) -> list[float]:
        import optuna

        context = self._load()
        params = sample(self.spec.space, trial)
        # A trial re-run after Ctrl-C keeps the first attempt's name, so its run folder resumes as the same run.
        name = recipe_name(self.recipe.name, trial.user_attrs.get("resume_number", trial.number))
        generating = self.recipe.task.workload_kind == "generate"
        trial_data = trial_recipe(self.base, self.spec, params, name, self.recipe.scored_sequence_length(), generating)
        trial_recipe_obj = Recipe.model_validate(trial_data, context={BASE_DIR_KEY: Path.cwd()})
        runtimes = self.spec.serving_runtimes(trial_recipe_obj.benchmark.runtimes)
        trial.set_user_attr("resolved_params", params)
        trial.set_user_attr("host", host_name())
        trial.set_user_attr("pid", os.getpid())
        if (twin := self._finished_twin(trial, params)) is not None:  # a small space: the same point drawn again
            # Stopped, not complete: the samplers then keep drawing new points (NSGA-II would breed from copies).
            trial.set_user_attr("duplicate_of", twin.number)
            trial.set_user_attr("stopped", f"same settings as trial {twin.number}: see its results")
            log.info(
                "trial %d: the same settings as trial %d, which finished; not run again", trial.number, twin.number
            )
            raise optuna.TrialPruned(f"same settings as trial {twin.number}")
        if generating and self.spec.proxy.enabled:  # its structure, untrained, timed decoding
            stop = self._proxy_check(trial, context, trial_recipe_obj, [])
            if stop:
                raise optuna.TrialPruned(stop)
        elif not generating and context.proxy_for(trial_recipe_obj, runtimes[0]) is not None:
            stop = self._proxy_check(trial, context, trial_recipe_obj, runtimes)
            if stop:
                raise optuna.TrialPruned(stop)
        run_dir = Path(trial.user_attrs.get("resume_dir") or self._new_run_dir(trial.number))
        trial.set_user_attr("run_dir", str(run_dir))
        try:
            finetune = trial_recipe_obj.stage("finetune")
            report = context.run_trial(trial_recipe_obj, run_dir, self._early_stop(trial, context, finetune))
        except HopelessTrial as stop:
            trial.set_user_attr("stopped", str(stop))
            trial.set_user_attr("stopped_by", "early_stop")
            raise optuna.TrialPruned(str(stop)) from None
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        shape = self.spec.objectives.batch_size, self.recipe.scored_sequence_length()
        if generating:
            outcome = read_generation_outcome(report, *shape)
        else:
            outcome = read_outcome(report, runtimes, *shape)
        trial.set_user_attr("outcome", asdict(outcome))
        # Points beyond the budget of the task's primary metric (top-1, an embedder's fidelity, a language model's
        # perplexity): feasible when <= 0.
        excess = self.recipe.search_budget().excess(**outcome.quality_excess_args)
        trial.set_user_attr("constraint", excess if excess is not None else float("inf"))
        trial.set_constraint("accuracy_drop_beyond_budget", trial.user_attrs["constraint"])
        return outcome.objectives(self.spec)

    def _finished_twin(self, trial, params: dict):
        for other in self.study.get_trials(deepcopy=False):
            if (
                other.number != trial.number
                and other.state.name == "COMPLETE"
                and other.user_attrs.get("resolved_params") == params
                and "outcome" in other.user_attrs
            ):
                return other
        return None

    def _proxy_check(self, trial, context, trial_recipe_obj: Recipe, runtimes: list[str]) -> str | None:
        """Why the candidate is not worth fine-tuning (its widths and depth buy no speed where served), or None."""
        batch_size, started = trial_recipe_obj.data.batch_size, time.perf_counter()
        if self.recipe.task.workload_kind == "generate":
            proxy = context.generation_proxy(trial_recipe_obj)
            result = proxy.measure(trial_recipe_obj)
            return None if result is None else self._judge_proxy(trial, {proxy.runtime: result}, started)
        try:
            pruned = context.original
            for stage in trial_recipe_obj.stages:  # each technique removes what the stage would, untrained
                shaped = stage.method.untrained(
                    stage.config, pruned, context.inputs, context.data.calibration, batch_size, trial_recipe_obj.seed
                )
                pruned = pruned if shaped is None else shaped
        except GreencompressError as error:  # e.g. a MACs target these channel rounding rules cannot reach
            trial.set_user_attr("stopped", f"infeasible: {error}")
            trial.set_user_attr("stopped_by", "infeasible")
            return f"infeasible: {error}"
        results = {runtime: context.proxy_for(trial_recipe_obj, runtime).measure(pruned) for runtime in runtimes}
        return self._judge_proxy(trial, results, started)

    def _judge_proxy(self, trial, results: dict, started: float) -> str | None:
        """Records the proxy's ratios on each runtime; why the candidate is not worth training, or None."""
        for runtime, result in results.items():
            log.info(
                "trial %d proxy: untrained pruned/unpruned latency on %s %.3fx [%.3f, %.3f]%s",
                trial.number,
                runtime,
                result.ratio,
                result.low,
                result.high,
                " (cached)" if result.cached else "",
            )
        best_runtime, best = min(results.items(), key=lambda item: item[1].ratio)
        trial.set_user_attr(
            "proxy",
            {
                **asdict(best),
                "runtime": best_runtime,
                "by_runtime": {runtime: asdict(result) for runtime, result in results.items()},
                "seconds": round(time.perf_counter() - started, 1),
            },
        )
        limit = self.spec.proxy.max_latency_ratio
        if best.ratio >= limit:
            reason = (
                f"proxy: its structure runs at {best.ratio:.3f}x the unpruned model's latency on "
                f"{best_runtime} untrained, its best runtime (limit {limit}); not worth fine-tuning"
            )
            trial.set_user_attr("stopped", reason)
            trial.set_user_attr("stopped_by", "proxy")
            return reason
        return None

    def _early_stop(self, trial, context, finetune):
        if not self.spec.early_stop.enabled or context.baseline_validation_top1 is None or finetune is None:
            return None
        floor = (
            context.baseline_validation_top1 - self.spec.budget.max_accuracy_drop - self.spec.early_stop.margin_points
        )
        epochs = finetune.epochs
        # Never within the warm-up or the epoch that ends it, and never at the last epoch (nothing left to save).
        check_epoch = max(math.ceil(epochs * self.spec.early_stop.at_fraction), math.ceil(finetune.warmup_epochs) + 1)
        if check_epoch >= epochs:
            return None
        checked = []

        def observer(epoch: int, validation_top1: float) -> None:
            if epoch != check_epoch or checked:  # the trial's fine-tuning only (QAT after it has its own epochs)
                return
            checked.append(epoch)
            trial.set_user_attr("checked_validation_top1", [epoch, 100 * validation_top1])
            if 100 * validation_top1 < floor:
                raise HopelessTrial(
                    f"early stop: validation top-1 {100 * validation_top1:.1f}% after epoch {epoch} of "
                    f"{epochs}, below {floor:.1f}% (unpruned {context.baseline_validation_top1:.1f}% "
                    "- budget - margin)"
                )

        return observer

    def _new_run_dir(self, number: int) -> Path:
        run_dir = self.folder / "trials" / f"trial-{number:03d}"
        suffix = 1
        while run_dir.exists():  # another study in this folder, or a retried trial: never overwrite a run
            suffix += 1
            run_dir = self.folder / "trials" / f"trial-{number:03d}-{suffix}"
        run_dir.mkdir(parents=True)
        return run_dir

    def _log_trial(self, study, trial) -> None:
        outcome = trial.user_attrs.get("outcome")
        if outcome:
            paired = outcome.get("anchor_energy_ratio")
            log.info(
                "trial %d done: %s %s, %.3g J/%s (%s)%s, latency %.3f ms",
                trial.number,
                outcome["candidate"],
                f"top-1 {outcome['top1']:.2f}%"
                if outcome["top1"] is not None
                else f"perplexity {outcome['perplexity']:.3f} ({outcome['perplexity_increase']:+.1f}%)",
                outcome["joules_per_inference"],
                outcome.get("unit", "inference"),
                outcome["energy_method"],
                f", {paired['ratio']:.3f}x {outcome['anchor']}'s in the same rounds" if paired else "",
                outcome["latency_p50_ms"],
            )
        else:
            log.info(
                "trial %d %s: %s",
                trial.number,
                trial.state.name.lower(),
                trial.user_attrs.get("stopped", "see its run folder"),
            )

    def _load(self):
        if self._context is None:
            self._context = _TrialContext(self.recipe, self.progress)
        return self._context


class _TrialContext:
    """What every trial of one process shares: the model, the data, the unpruned validation top-1, the proxies."""

    def __init__(self, recipe: Recipe, progress):
        from greencompress.compress.finetune import validation_top1
        from greencompress.pipeline.prepare import preflight, prepare

        self.recipe, self.progress = recipe, progress
        self.proxies = {}
        if recipe.task.workload_kind == "generate":
            # Each trial runs as a text-generation run, loading what it needs; here the meter and files are checked and
            # the model is read once (a GGUF file is dequantized into the cache, which the trials then read), with
            # the text the proxy ranks and times on.
            from greencompress.models.corpus import load_corpus
            from greencompress.models.tasks.text_generation import PERPLEXITY_WINDOW

            _, self.meter, _ = preflight(recipe)
            self.loaded = recipe.task.load(recipe.model, progress)
            self.original = self.loaded.module.eval()
            context = getattr(self.original.config, "max_position_embeddings", None)
            self.corpus = load_corpus(recipe.data, self.loaded.tokenizer, PERPLEXITY_WINDOW, context)
            self.baseline_validation_top1 = None
            return
        # As a trial's run prepares it: text tokenised by the model's tokenizer, a sentence embedder's centroids
        # fitted (its top-1 needs them).
        self.prepared = prepare(recipe)
        self.data, self.inputs = self.prepared.data, self.prepared.inputs
        self.original = self.prepared.loaded.module.eval()
        finetune = recipe.stage("finetune")
        self.baseline_validation_top1 = (
            100 * validation_top1(self.original, self.data.train, finetune, recipe.seed)
            if finetune is not None and self.data.train is not None
            else None
        )

    def generation_proxy(self, trial_recipe_obj: Recipe):
        """A language model's proxy, on the runtime its candidates are served on (ONNX Runtime GenAI where the
        recipe measures it, else PyTorch)."""
        from greencompress.pipeline.generate import runtimes_for
        from greencompress.pipeline.generation_proxy import GenerationProxy

        measured, _ = runtimes_for(trial_recipe_obj)
        runtime = "onnxruntime-genai" if "onnxruntime-genai" in measured else "torch"
        if runtime not in self.proxies:
            rounds = self.recipe.search.proxy.rounds
            self.proxies[runtime] = GenerationProxy(self.recipe, self.loaded, self.corpus, self.meter, runtime, rounds)
        return self.proxies[runtime]

    def proxy_for(self, trial_recipe_obj: Recipe, runtime: str):
        from greencompress.pipeline.proxy import LatencyProxy

        spec = self.recipe.search.proxy
        prune = trial_recipe_obj.stage("prune")
        depth = trial_recipe_obj.stage("depth") is not None
        if not spec.enabled or not (depth or (prune is not None and prune.method == "structured")):
            return None
        if runtime not in self.proxies:
            quantize = trial_recipe_obj.stage("quantize")
            self.proxies[runtime] = LatencyProxy(
                self.original,
                self.inputs,
                runtime,
                trial_recipe_obj.benchmark.runner_settings,
                quantize,
                self.data.calibration,
                self.recipe.search.objectives.batch_size,
                trial_recipe_obj.export.opset,
                spec.rounds,
                spec.window_s,
                sequence_length=self.recipe.scored_sequence_length(),
            )
        return self.proxies[runtime]

    def run_trial(self, trial_recipe_obj: Recipe, run_dir: Path, observer):
        import contextlib

        from greencompress.compress.finetune import observe_epochs
        from greencompress.pipeline.execute import run

        with log_to_file(run_dir / "run.log"):  # each trial's folder has its log, as a run's does
            with observe_epochs(observer) if observer else contextlib.nullcontext():
                return run(trial_recipe_obj, run_dir, progress=self.progress)
