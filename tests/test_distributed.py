"""Several processes (lopt.distributed): two local processes give a single process's results,
only process 0 writes, a killed process stops the other with one line, and a resume of both
finishes the run as an uninterrupted single process would."""

import json
import os
import re
import signal
import subprocess
import tempfile
import time

import jax
import numpy as np
import pytest

from experiments import launch
from lopt import distributed, gps
from lopt.search import driver, strategies
from tests.conftest import FAST_COMPILE, REPO_ROOT

SEARCH_BUDGET = 300  # 30 iterations of 10 rules: long enough to kill process 1 in the middle


def _launch(module, args_of_process, port, **environment):
    """Starts one `python -m module` per entry of `args_of_process`, joined as processes of
    one run on localhost:port, with `environment` added to this one's; returns (Popen, stdout
    file, stderr file) per process (files, not pipes: a pipe nobody reads fills up and stalls
    its process)."""
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, JAX_PLATFORMS="cpu", **FAST_COMPILE,
               **environment)
    count = len(args_of_process)
    launched = []
    for index, args in enumerate(args_of_process):
        stdout, stderr = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        command = launch.commands(module, args, count, port)[index]
        launched.append((subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=stdout,
                                          stderr=stderr, text=True), stdout, stderr))
    return launched


def _read_back(file) -> str:
    file.seek(0)
    text = file.read()
    file.close()
    return text


def _finish(launched, timeout=600):
    """(returncode, stdout, stderr) of each launched process, waiting at most `timeout` s in
    all."""
    deadline = time.time() + timeout
    codes = [process.wait(timeout=max(1.0, deadline - time.time()))
             for process, _, _ in launched]
    return [(code, _read_back(stdout), _read_back(stderr))
            for code, (_, stdout, stderr) in zip(codes, launched, strict=True)]


# Lines of a process's standard error that name a failure: glog's fatal and error lines, Python
# errors and aborts (JAX_LOG_COMPILES's warning lines do not match).
_FAILURE_LINE = re.compile(r"^[FE]\d{4} |Error|error:|Fatal|terminate called|Check failed")


def _all_succeeded(finished) -> bool:
    return all(code == 0 for code, _, _ in finished)


def _failures(finished) -> str:
    """For each process that failed: its exit status, the lines naming the failure and the end
    of its standard error (a process aborted by its peer's failure shows only the former's
    stacks: the lines of every process tell which failed first)."""
    report = []
    for index, (code, _, stderr) in enumerate(finished):
        if code != 0:
            named = [line[:300] for line in stderr.splitlines() if _FAILURE_LINE.search(line)]
            report += [f"--- process {index}: exit status {code}", *named[:30], stderr[-1500:]]
    return "\n".join(report)


def _rows(path):
    with open(path) as file:
        return [json.loads(line) for line in file]


@pytest.mark.parametrize(("arguments", "message"), [
    (("localhost:1234", None, None), "need all of coordinator_address, num_processes"),
    (("localhost:1234", 2, 2), r"process_id must be in \[0, 2\), got 2"),
    (("localhost", 2, 0), "coordinator_address must be host:port, got 'localhost'"),
    (("localhost:1234", 0, 0), "num_processes must be at least 1, got 0"),
])
def test_initialize_refuses_bad_arguments_before_connecting(arguments, message):
    with pytest.raises(ValueError, match=message):
        distributed.initialize(*arguments)


def test_single_process_helpers_are_plain():
    assert distributed.is_writer()
    assert distributed.from_writer(lambda: b"abc") == b"abc"
    gathered = distributed.gather({"x": jax.numpy.arange(3.0)})
    assert isinstance(gathered["x"], np.ndarray) and gathered["x"].tolist() == [0.0, 1.0, 2.0]
    assert not distributed.is_peer_failure(RuntimeError("Gloo AllGather failed"))


def test_two_process_search_killed_and_resumed_equals_one_process(tmp_path):
    writer_out, other_out = str(tmp_path / "writer"), str(tmp_path / "other")
    args = ["--config=smoke", "--strategy=evolution", f"--budget={SEARCH_BUDGET}"]
    port = launch.free_port()
    processes = _launch("experiments.search_rules",
                        [[*args, f"--out={writer_out}"], [*args, f"--out={other_out}"]], port)
    results_path = os.path.join(writer_out, "results.jsonl")
    deadline = time.time() + 300
    while time.time() < deadline and not (
            os.path.exists(results_path) and len(_rows(results_path)) >= 20):
        assert processes[0][0].poll() is None, _read_back(processes[0][2])[-3000:]
        time.sleep(0.05)
    processes[1][0].send_signal(signal.SIGKILL)
    killed_at = time.time()
    (code, _, stderr), _ = _finish(processes, timeout=120)
    assert code == 1, stderr[-3000:]
    assert time.time() - killed_at < 60
    assert "process 0 of 2: another process of this run failed" in stderr
    assert "restart every process with --resume" in stderr
    assert len(_rows(results_path)) < SEARCH_BUDGET, "process 1 was killed after the end"

    # Resume both; process 1 has no copy of the output directory (it reads process 0's).
    assert not os.path.exists(other_out)
    resumed = _finish(_launch("experiments.search_rules",
                              [[*args, f"--out={writer_out}", "--resume"],
                               [*args, f"--out={other_out}", "--resume"]], launch.free_port()))
    assert _all_succeeded(resumed), _failures(resumed)
    assert "Best rule:" in resumed[0][1] and "Best rule:" not in resumed[1][1]
    assert not os.path.exists(other_out)

    config = driver.SearchConfig.preset(
        "smoke", budget=SEARCH_BUDGET,
        strategy=strategies.Evolution(space=driver.SearchConfig.preset("smoke").space,
                                      batch_size=10))
    single = driver.run(config, jax.random.key(0))
    rows = _rows(results_path)
    assert len(rows) == SEARCH_BUDGET  # every row written once
    assert [row["rule"] for row in rows] == [row["rule"] for row in single.rows]
    assert [row["learning_rate"] for row in rows] == [row["learning_rate"] for row in single.rows]
    # The two processes train half of each chunk each: batches of another size round off
    # differently (float32 children), so scores agree to round-off, not to the bit. A rule
    # that fails (at or below the floor, the score of a pruned rule) may blow up chaotically,
    # where round-off grows without bound: both runs only agree that it failed.
    floor = next(row["score"] for row in single.rows if row["pruned"])
    scores, reference = (np.array([row["score"] for row in run_rows])
                         for run_rows in (rows, single.rows))
    working = reference > floor
    assert working.sum() > SEARCH_BUDGET // 4  # the comparison covers many rules
    np.testing.assert_allclose(scores[working], reference[working], rtol=1e-5, atol=1e-9)
    assert np.all(scores[~working] <= floor)


def test_two_process_gps_resumed_equals_one_process(run_module, tmp_path):
    # 4 logistic-regression objectives over 2 processes: two iterations (each process with
    # its own --out, to see that only process 0 writes), checking that the second compiles
    # neither the LQG stage nor the S-step again; then a resume to a third through
    # experiments.launch.
    args = ["--family=logistic_regression", "--config=smoke", "--num_train=4"]
    single_out, writer_out, other_out = (str(tmp_path / name)
                                         for name in ("single", "writer", "other"))
    single = run_module("experiments.train_gps", *args, "--num_iterations=3",
                        f"--out={single_out}")
    assert single.returncode == 0, single.stderr[-3000:]
    finished = _finish(_launch("experiments.train_gps", [
        [*args, "--num_iterations=2", f"--out={out}"] for out in (writer_out, other_out)],
        launch.free_port(), JAX_LOG_COMPILES="1"))
    assert _all_succeeded(finished), _failures(finished)
    for stage in ("optimise_stage", "policy_stage"):  # the LQG; the S-step
        assert finished[0][2].count(f"Compiling jit({stage})") == 1, stage
    assert not os.path.exists(other_out)  # only process 0 writes
    resumed = run_module("experiments.launch", f"--logs={tmp_path / 'logs'}", "--",
                         "experiments.train_gps", *args, "--num_iterations=3",
                         f"--out={writer_out}", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "at iteration 2" in resumed.stderr
    assert "Connecting to JAX distributed" in (tmp_path / "logs" / "process_1.log").read_text()
    expected, learned = gps.load(single_out), gps.load(writer_out)
    assert len(learned.history) == len(expected.history) == 3
    for name in ("controller_cost", "policy_cost", "sample_cost", "kl"):
        np.testing.assert_allclose([record[name] for record in learned.history],
                                   [record[name] for record in expected.history], rtol=1e-9)
    for leaf, reference in zip(jax.tree.leaves(learned.policy),
                               jax.tree.leaves(expected.policy), strict=True):
        np.testing.assert_allclose(leaf, reference, rtol=1e-9, atol=1e-12)


def test_launcher_gives_each_process_its_own_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 5, 6, 7, 8, 9})
    assert [launch.cores(index, 2) for index in range(2)] == [[4, 5, 6], [7, 8, 9]]
    assert [launch.cores(index, 4) for index in range(4)] == [[4], [5], [6], [7]]
    assert launch.cores(0, 1) == [4, 5, 6, 7, 8, 9]
    assert [launch.cores(index, 8)[0] for index in range(8)] == [4, 5, 6, 7, 8, 9, 4, 5]


def test_launcher_refuses_bad_arguments_in_one_line(run_module):
    for arguments, message in (
            ((), "name the binary to run after --"),
            (("--processes=0", "--", "experiments.train_gps"), "--processes must be at least 1"),
            (("--", "experiments.train_gps", "--process_id=1"), "the launcher sets")):
        result = run_module("experiments.launch", *arguments)
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
