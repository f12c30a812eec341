"""Progress lines: rates and ETAs from a fake clock, ticks from jitted code, scopes."""

import re

import jax
import jax.numpy as jnp

from lopt import progress


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_stage_and_job_etas_follow_the_rate_and_the_plan():
    clock, lines = FakeClock(), []
    with progress.job("demo", {"first": 1.0, "second": 3.0, "third": 2.0}, interval=1e6,
                      log=lines.append, clock=clock) as job:
        with progress.stage("first"):
            clock.now += 10.0  # 10 s for 1 unit of plan weight
        with progress.stage("second", total=4, unit="objectives") as stage:
            clock.now += 5.0
            stage.update(1)
            line = job.line()
        clock.now += 1.0
    # second: 1 of 4 in 5 s -> 15 s left; third: 2 units at 10 s per unit -> 20 s.
    assert "second: 1/4 objectives (0.2 objectives/s), ETA 15s; job ETA 35s" in line
    assert any(entry.startswith("[demo 10s] first: done in 10.0s; job ETA 50s")
               for entry in lines)
    assert lines[-1].splitlines()[:3] == ["demo: time per stage", "first: 10.0s",
                                          "second: 5.0s"]
    assert lines[-1].splitlines()[3].startswith("total: 16.0s, of which XLA compiled 0 programs")
    assert re.search(r"; peak memory \d+\.\d GB$", lines[-1])


def test_a_nested_stage_without_an_eta_shows_the_enclosing_stages_eta():
    clock = FakeClock()
    with progress.job("demo", interval=1e6, log=lambda line: None, clock=clock) as job:
        with progress.stage("iterations", total=5, unit="iterations") as outer:
            clock.now += 20.0
            outer.update(2)  # at 24 s below: 2 of 5 done -> 3 x 12 s = 36 s left
            with progress.stage("iteration 3/5", total=100, unit="fit steps") as inner:
                clock.now += 4.0
                waiting = job.line()
                inner.update(50)
                ticking = job.line()
    assert waiting.endswith("iteration 3/5: 0/100 fit steps (0 fit steps/s), ETA unknown (in "
                            "iterations: 2/5 iterations (0.0833 iterations/s), ETA 36s)")
    assert ticking.endswith("iteration 3/5: 50/100 fit steps (12.5 fit steps/s), ETA 4s")


def test_ticks_from_a_jitted_scan_and_scoped_labels_reach_the_open_stage():
    lines = []

    @jax.jit
    def count(steps):
        def body(total, number):
            progress.tick((number + 1).astype(jnp.uint16))  # a dtype no other test reduces
            return total + number, None
        return jax.lax.scan(body, 0, steps)[0]

    steps = jnp.arange(7)
    with progress.job("demo", interval=1e6, log=lines.append):
        with progress.scope("lto_logistic"), progress.stage("scan", total=7) as stage:
            jax.block_until_ready(count(steps))
            jax.effects_barrier()
    assert stage.done == 7
    # `count` alone: the callback reads its argument on the host and dispatches no JAX work
    # of its own from the callback's thread.
    compiled = re.search(r"XLA compiled (\d+) programs", lines[-1])
    assert compiled and int(compiled.group(1)) == 1
    assert "lto_logistic / scan: " in lines[-1].splitlines()[1]


def test_without_a_job_stages_are_inert_and_print_nothing(capsys):
    with progress.stage("alone", total=3) as stage:
        stage.update(2)
        progress.tick(jnp.asarray(3))
    assert stage.done == 2
    assert capsys.readouterr().out == ""
