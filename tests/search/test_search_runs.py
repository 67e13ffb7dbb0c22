"""Real searches on the tiny recipe: trials are ordinary runs, best.yaml reproduces, Ctrl-C resumes, workers share.

The tiny recipe (a 2-class ResNet-20 on a small image folder) prunes, fine-tunes and quantizes in a
few seconds per trial; the proxy limit is set so that every candidate passes it and gets trained.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import pytest

from greencompress.pipeline.recipe import load_recipe
from greencompress.search.spec import SearchRecipe

pytestmark = pytest.mark.slow

SEARCH = """search:
  space:
    prune_ratio: {{low: 0.2, high: 0.6, step: 0.1}}
    round_to: [1, 4]
    calibration_method: [minmax, percentile]
  budget: {{max_trials: {trials}, max_accuracy_drop: 100}}
  proxy: {{rounds: 3, window_s: 0.02, max_latency_ratio: 10}}
output: {{dir: {output}}}
"""


def write_search_recipe(tiny_recipe: Path, trials: int) -> Path:
    # One batch size: the search scores batch 1 only, and every trial measured batch 2 for nothing.
    text = (
        tiny_recipe.read_text()
        .replace(
            "  - quantize: {calibration_samples: 12}",
            "  - prune: {ratio: 0.5}\n  - finetune: {epochs: 1, batch_size: 4}\n"
            "  - quantize: {calibration_samples: 12}",
        )
        .replace("batch_sizes: [1, 2]", "batch_sizes: [1]")
    )
    assert "batch_sizes: [1]" in text
    tiny_recipe.write_text(text + SEARCH.format(trials=trials, output=tiny_recipe.parent / "runs"))
    return tiny_recipe


def open_search(path: Path, worker: bool = False):
    from greencompress.search.study import Search, default_storage, search_folder

    recipe = load_recipe(path, schema=SearchRecipe)
    folder = search_folder(recipe, None)
    folder.mkdir(parents=True, exist_ok=True)
    return Search(recipe, folder, default_storage(folder), worker=worker)


def states(search) -> list[str]:
    return [trial.state.name for trial in search.study.get_trials()]


def test_search_runs_trials_as_runs_and_best_yaml_reproduces_the_accuracy_exactly(tiny_recipe, tmp_path):
    from greencompress.pipeline.execute import run
    from greencompress.search.summary import summarize, write_summary
    from greencompress.search.trial import read_outcome

    search = open_search(write_search_recipe(tiny_recipe, trials=2))
    search.optimize()
    # Two trials count; a point drawn again (a small space) is stopped at once and does not count.
    assert search.finished_trials() == 2 and states(search).count("COMPLETE") == 2
    summary = summarize(search.study, search.spec)
    best = write_summary(summary, search.folder)
    assert summary.chosen is not None and summary.front
    for row in (row for row in summary.rows if row.state == "complete"):  # each an ordinary run folder
        assert (Path(row.run_dir) / "report.json").is_file() and (Path(row.run_dir) / "recipe.resolved.yaml").is_file()
        assert row.proxy is not None and row.outcome.runtime == "onnxruntime"
    html = (search.folder / "search.html").read_text()
    assert "data:image/png;base64," in html and "Trials" in html

    chosen = next(row for row in summary.rows if row.number == summary.chosen)
    (tmp_path / "again").mkdir()
    again = run(load_recipe(best), tmp_path / "again", shared_cache=tmp_path / "fresh-cache")  # nothing reused
    reproduced = read_outcome(again, ["onnxruntime"], 1)
    assert reproduced.candidate == chosen.outcome.candidate
    assert reproduced.top1 == chosen.outcome.top1


def test_ctrl_c_in_a_trial_resumes_it_and_never_reruns_finished_ones(tiny_recipe, monkeypatch):
    from greencompress.search import study as study_module

    real = study_module._TrialContext.run_trial
    calls: list[str] = []
    interrupted_once: list[bool] = []

    def interrupted_second(self, recipe, run_dir, observer):
        calls.append(Path(run_dir).name)
        if len(calls) == 2 and not interrupted_once:
            interrupted_once.append(True)
            raise KeyboardInterrupt
        return real(self, recipe, run_dir, observer)

    monkeypatch.setattr(study_module._TrialContext, "run_trial", interrupted_second)
    path = write_search_recipe(tiny_recipe, trials=2)
    with pytest.raises(KeyboardInterrupt):
        open_search(path).optimize()
    first = open_search(path)
    assert states(first) == ["COMPLETE", "FAIL"]
    interrupted = first.study.trials[1]
    assert interrupted.user_attrs["interrupted"] is True

    calls.clear()
    first.optimize()  # the same command again
    assert calls[0] == "trial-001"  # the interrupted trial first, in its own run folder
    assert "trial-000" not in calls
    assert first.finished_trials() == 2
    resumed = first.study.trials[2]
    assert resumed.params == interrupted.params and resumed.state.name == "COMPLETE"
    report = json.loads((Path(resumed.user_attrs["run_dir"]) / "report.json").read_text())
    assert report["name"] == "tiny-trial001"  # the same run, resumed, not a new one in the old folder


def test_a_search_killed_hard_mid_trial_then_run_again_names_the_dead_trial_and_its_retry(tiny_recipe):
    import signal
    import time

    path = write_search_recipe(tiny_recipe, trials=1)
    command = [sys.executable, "-m", "greencompress", "search", str(path)]
    folder = tiny_recipe.parent / "runs" / "tiny-search"
    log = (tiny_recipe.parent / "first.log").open("w")
    worker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    # Killed once a trial's run has started (whichever trial: the proxy may turn some candidates away first).
    while not list(folder.glob("trials/trial-*/run.log")) and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker.poll() is None, (
        "the search ended before a trial started:\n" + (tiny_recipe.parent / "first.log").read_text()[-3000:]
    )
    worker.send_signal(signal.SIGKILL)  # no handler runs: the trial stays RUNNING in the study
    worker.wait()
    log.close()

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = {row["number"]: row for row in json.loads((folder / "search.json").read_text())["rows"]}
    assert "running" not in {row["state"] for row in rows.values()}
    (dead,) = [row for row in rows.values() if "killed or crashed" in row["reason"]]
    assert dead["state"] == "fail" and dead["run_dir"]
    retry = int(dead["reason"].rsplit("retried as trial ", 1)[1])
    assert rows[retry]["state"] == "complete" and rows[retry]["params"] == dead["params"]
    assert rows[retry]["run_dir"] == dead["run_dir"]  # the same run folder, resumed
    assert f"retried as trial {retry}" in (folder / "search.md").read_text()


@pytest.fixture
def postgres_url():
    """A PostgreSQL server started for the test (Debian's postgresql), or a skip saying why there is none."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'psycopg[binary]')")
    bin_dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    initdb = shutil.which("initdb") or next((str(d / "initdb") for d in bin_dirs if (d / "initdb").exists()), None)
    if initdb is None:
        pytest.skip("no PostgreSQL server here (apt-get install postgresql)")
    pg_ctl = str(Path(initdb).resolve().parent / "pg_ctl")
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        as_user = ["runuser", "-u", "postgres", "--"]
    folder = Path(tempfile.mkdtemp(prefix="greencompress-pg-"))
    os.chmod(folder, 0o777)
    data = folder / "data"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust"], check=True, capture_output=True
    )
    subprocess.run(
        [
            *as_user,
            pg_ctl,
            "-D",
            str(data),
            "-w",
            "-l",
            str(folder / "server.log"),
            "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def _interval(report: dict) -> tuple[float, float]:
    lock = report["environment"]["measurement_lock"]
    return tuple(
        datetime.strptime(lock[key], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp() for key in ("held_from_utc", "held_until_utc")
    )


@pytest.mark.parametrize("storage", ["sqlite", "postgresql"])
def test_two_workers_share_one_study_without_duplicates_or_overlapping_windows(storage, tiny_recipe, tmp_path, request):
    path = write_search_recipe(tiny_recipe, trials=2)
    url = f"sqlite:///{tmp_path / 'shared.db'}" if storage == "sqlite" else request.getfixturevalue("postgres_url")
    command = [sys.executable, "-m", "greencompress", "search", str(path), "--storage", url, "--worker", "--quiet"]
    environment = {**os.environ, "GREENCOMPRESS_LOCK_DIR": str(tmp_path)}
    workers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs

    import optuna

    trials = optuna.load_study(study_name="tiny", storage=url).get_trials()
    finished = [t for t in trials if t.state.name == "COMPLETE"]
    # The budget is checked after each trial: a worker that started before the last one finished may add one.
    assert 2 <= len(finished) <= 3, [t.state.name for t in trials]
    run_dirs = [t.user_attrs["run_dir"] for t in finished if "duplicate_of" not in t.user_attrs]
    assert len(run_dirs) == len(set(run_dirs))  # no trial run twice
    # Trials come from the two workers (usually both; one may take them all when the other starts late).
    assert {t.user_attrs["pid"] for t in finished} <= {w.pid for w in workers}
    intervals = sorted(_interval(json.loads((Path(d) / "report.json").read_text())) for d in run_dirs)
    for (_, first_end), (second_start, _) in zip(intervals, intervals[1:]):
        assert first_end <= second_start  # timing windows of two processes never overlapped


def test_a_search_over_a_transformer_s_heads_ffn_and_layers_times_token_inputs_and_scores_one_length(tmp_path):
    from greencompress.search.summary import summarize
    from tests.models.test_huggingface import small_rows, tiny_bert, write_csv

    folder = tiny_bert(tmp_path / "bert", layers=3)
    path = tmp_path / "bert-search.yaml"
    path.write_text(f"""
name: bert
seed: 0
model: {{source: huggingface, path: {folder}, task: text-classification}}
data: {{kind: text, path: {write_csv(tmp_path / "texts.csv", small_rows())}, eval_split: test, calibration_split: train,
        batch_size: 16}}
stages:
  - prune: {{heads: 0.5, importance: activation}}
  - finetune: {{epochs: 1, batch_size: 16, distillation: {{}}}}
  - quantize: {{method: dynamic}}
benchmark: {{batch_sizes: [1, 8], sequence_lengths: [16, 32], runtimes: [onnxruntime], window_s: 0.05,
            min_iterations: 3, windows: 2, max_windows: 2, warmup_iterations: 1, threads: 1}}
energy: {{idle_s: 0}}
search:
  space: {{heads: [0.25, 0.5], ffn: [0.0, 0.5], depth: [0, 1]}}
  budget: {{max_trials: 2, max_accuracy_drop: 100}}
  proxy: {{rounds: 3, window_s: 0.02, max_latency_ratio: 10}}
output: {{dir: {tmp_path / "runs"}}}
""")
    search = open_search(path)
    search.optimize()
    assert search.finished_trials() == 2
    summary = summarize(search.study, search.spec)
    complete = [row for row in summary.rows if row.state == "complete"]
    assert len(complete) == 2 and summary.sequence_length == 32 and "sequence 32" in summary.verdict
    for row in complete:
        report = json.loads((Path(row.run_dir) / "report.json").read_text())
        stages = {stage["technique"]: stage for stage in report["stages"]}
        heads = stages["prune"]["metrics"]
        # The drawn shares, removed for real: 4 heads less 25% or 50%; an FFN of 64 less 0% or 50%.
        assert heads["heads_after"] == round(4 * (1 - row.params["heads"]))
        assert heads["ffn_after"] == round(64 * (1 - row.params["ffn"]))
        assert ("depth" in stages) == (row.params["depth"] > 0)
        # Measured and scored at one shape: batch 1, the longest benchmarked sequence, token inputs in the proxy.
        assert {key for item in report["artifacts"] for key in item["latency"]} == {"1x32"}
        assert row.outcome.sequence_length == 32 and row.outcome.anchor_energy_ratio is not None
        assert row.proxy is not None and row.proxy["candidate_p50_ms"] > 0


@pytest.mark.slow
def test_a_sentence_embedder_search_is_budgeted_by_embedding_fidelity_not_label_top1(tmp_path):
    from greencompress.search.summary import summarize
    from tests.models.test_huggingface import small_rows, tiny_bert, write_csv

    folder = tiny_bert(tmp_path / "encoder", head=False, layers=3)
    path = tmp_path / "embedder-search.yaml"
    path.write_text(f"""
name: embedder
seed: 0
model: {{source: huggingface, path: {folder}, task: feature-extraction}}
data: {{kind: text, path: {write_csv(tmp_path / "texts.csv", small_rows())}, eval_split: test, batch_size: 16}}
stages:
  - prune: {{heads: 0.5, importance: activation}}
  - quantize: {{method: dynamic}}
benchmark: {{batch_sizes: [1], sequence_lengths: [16], runtimes: [onnxruntime], window_s: 0.05, min_iterations: 3,
            windows: 2, max_windows: 2, warmup_iterations: 1, threads: 1}}
energy: {{idle_s: 0}}
search:
  space: {{heads: [0.25, 0.75]}}
  budget: {{max_trials: 2, max_accuracy_drop: 100, min_embedding_cosine: 0.99999, min_neighbour_agreement: 0.5}}
  proxy: {{enabled: false}}
output: {{dir: {tmp_path / "runs"}}}
""")
    search = open_search(path)
    search.optimize()
    summary = summarize(search.study, search.spec, search.recipe.search_budget())
    complete = [row for row in summary.rows if row.state == "complete"]
    assert len(complete) == 2 and summary.budget.startswith("embedding fidelity to the original FP32 model")
    for row in complete:  # a label budget of 100 points admits every trial; the embeddings decide
        fidelity = row.outcome.embedding_cosine >= 0.99999 and row.outcome.neighbour_agreement >= 0.5
        assert 0.999 < row.outcome.embedding_cosine < 0.99999 and row.feasible == fidelity is False
    # Removing heads moves a tiny random encoder's embeddings by 1e-4 to 2e-4 (1 - cosine): beyond this budget.
    assert summary.chosen is None and summary.verdict.startswith("No candidate within the budget (embedding fidelity")
