"""Per-member cost of the population interpreter against compiled fixed rules.

    python -m benchmarks.interpreter [--member-sizes 4096,65536]

For a population of 256 random depth-2 rules (sampled under the paper's constraints), one
optimizer step per member (moving averages, rule, parameter update) is timed, in one run,
interleaved:
  - `interpret`: one `jax.vmap`, every member computing every formula of the rule language
    (target: at most 2.0 times a fixed rule);
  - fixed rules compiled with `to_optax` and vmapped over the 256 members: PowerSign, and each
    of 8 members of the population (their mean is what compiling every member would cost).
It also counts the XLA compilations caused by a second population of the same shape (must be 0).
The gradients are an argument of the compiled steps, as in training: closed over as constants,
XLA would fold g², g³ into extra constant arrays that each step reads from memory.

Every side is timed twice: allocating its new parameters and optimizer state in fresh buffers
each step (as the first version of this benchmark did), and updating them in place (donated
buffers, as in a training loop under `jax.lax.scan` such as the population evaluator's). On a
CPU fresh buffers above 32 MiB (the 65,536-parameter case) are mapped from the kernel on every
step, and those page faults weigh on both sides alike, which brings the first ratio closer to 1
than the arithmetic does; the in-place ratio is the steady-state cost of training.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from lopt import rules

POPULATION = 256
DEPTH = 2
LEARNING_RATE = 1e-3
NUM_FIXED_MEMBERS = 8
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def _population(seed: int) -> list[rules.Rule]:
    keys = jax.random.split(jax.random.key(seed), POPULATION)
    codes = jax.jit(jax.vmap(lambda key: rules.random_tokens(key, DEPTH)))(keys)
    return [rules.from_tokens(row, DEPTH) for row in np.asarray(codes)]


def _member_trees(member_size: int):
    params = jax.random.normal(jax.random.key(0), (POPULATION, member_size))
    grads = 0.1 * jax.random.normal(jax.random.key(1), (POPULATION, member_size))
    keys = jax.random.split(jax.random.key(2), POPULATION)
    return {"w": params}, {"w": grads}, keys


def _interpreter_runner(codes, params, grads, keys, in_place: bool):
    """One population step: advance every member's moments, interpret, apply −lr·d."""

    def step(codes, params, state, grads):
        state, moments, step_keys = jax.vmap(rules.advance)(state, grads)
        directions = rules.interpret(codes, moments, params, step_keys)
        params = jax.tree.map(lambda p, d: p - LEARNING_RATE * d, params, directions)
        return params, state

    step = jax.jit(step, donate_argnums=(1, 2) if in_place else ())
    init = lambda p, k: rules.init_state(p, key=k)
    carry = _own_copy([params, jax.vmap(init)(params, keys)])

    def run(codes=codes):
        carry[0], carry[1] = step(codes, carry[0], carry[1], grads)
        return carry[0]

    return run


def _fixed_runner(rule, params, grads, keys, in_place: bool):
    """The same step for one compiled rule, vmapped over the members."""
    optimizer = lambda key=None: rules.to_optax(rule, LEARNING_RATE, key=key)

    def step(params, state, grads):
        update = lambda g, s, p: optimizer().update(g, s, p)
        updates, state = jax.vmap(update)(grads, state, params)
        return jax.tree.map(jnp.add, params, updates), state

    step = jax.jit(step, donate_argnums=(0, 1) if in_place else ())
    carry = _own_copy([params, jax.vmap(lambda p, k: optimizer(k).init(p))(params, keys)])

    def run():
        carry[0], carry[1] = step(carry[0], carry[1], grads)
        return carry[0]

    return run


def _median_seconds(candidates, repeats: int, calls: int) -> dict[str, dict]:
    """Median wall and process-CPU seconds of one call of each candidate, interleaved.

    Like `benchmarks.timing.median_seconds`, and also in CPU seconds of this process (all
    its threads), which moves less than wall time when other processes load the machine.
    """
    for run in candidates.values():  # compile and warm up
        jax.block_until_ready(run())
    samples = {clock: {name: [] for name in candidates} for clock in ("wall", "cpu")}
    for _ in range(repeats):
        for name, run in candidates.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                result = run()
            jax.block_until_ready(result)
            samples["wall"][name].append((time.perf_counter() - wall) / calls)
            samples["cpu"][name].append((time.process_time() - cpu) / calls)
    return {clock: {name: float(np.median(times)) for name, times in by_name.items()}
            for clock, by_name in samples.items()}  # fmt: skip


def _own_copy(tree):
    """A copy of every array, so that donating it deletes no array another runner holds."""
    return jax.tree.map(jnp.copy, tree)


def _count_compiles(run) -> int:
    compiles = []
    listener = lambda event, duration, **kwargs: compiles.append(event == COMPILE_EVENT)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        jax.block_until_ready(run())
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return sum(compiles)


def measure(member_size: int, first, second, repeats: int):
    params, grads, keys = _member_trees(member_size)
    first_codes, second_codes = rules.encode(first, DEPTH), rules.encode(second, DEPTH)
    modes = {"fresh buffers": False, "in place": True}
    candidates = {}
    for mode, in_place in modes.items():
        runners = {"interpret": _interpreter_runner(first_codes, params, grads, keys, in_place),
                   "fixed PowerSign": _fixed_runner(rules.LIBRARY["powersign"], params, grads,
                                                    keys, in_place)}  # fmt: skip
        for index in range(NUM_FIXED_MEMBERS):
            runners[f"fixed member {index}"] = _fixed_runner(
                first[index], params, grads, keys, in_place)  # fmt: skip
        candidates.update({(mode, name): run for name, run in runners.items()})
    times = _median_seconds(candidates, repeats=repeats, calls=3)
    interpreter = candidates[("fresh buffers", "interpret")]
    compiles = _count_compiles(lambda: interpreter(second_codes))

    print(f"\n{POPULATION} members x {member_size:,} parameters, depth {DEPTH}, float32, "
          f"{jax.devices()[0].device_kind}; us/member with fresh buffers | in place")  # fmt: skip
    per_member = {key: seconds / POPULATION * 1e6 for key, seconds in times["wall"].items()}
    cpu = {key: seconds / POPULATION * 1e6 for key, seconds in times["cpu"].items()}
    names = [name for mode, name in candidates if mode == "fresh buffers"]
    for name in names:
        rule = f"  {first[int(name.split()[-1])]}" if name.startswith("fixed member") else ""
        costs = " | ".join(f"{per_member[mode, name]:9.2f}" for mode in modes)
        print(f"  {name:18s} {costs}{rule}")
    for mode in modes:
        ratios = {}
        for clock, costs in (("wall", per_member), ("CPU", cpu)):
            members = np.mean([costs[mode, f"fixed member {i}"] for i in range(NUM_FIXED_MEMBERS)])
            ratios[clock] = (costs[mode, "interpret"] / costs[mode, "fixed PowerSign"],
                             costs[mode, "interpret"] / members)  # fmt: skip
        print(
            f"per-member ratio ({mode}) interpret / fixed PowerSign: {ratios['wall'][0]:.2f}"
            f"   / mean of {NUM_FIXED_MEMBERS} fixed members: {ratios['wall'][1]:.2f}"
            f"  (target <= 2.0); in CPU seconds: {ratios['CPU'][0]:.2f} / {ratios['CPU'][1]:.2f}"
        )
    print(f"compilations for the second population: {compiles}  (must be 0)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--member-sizes", default="4096,65536")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    first, second = _population(seed=0), _population(seed=1)
    for member_size in map(int, args.member_sizes.split(",")):
        measure(member_size, first, second, args.repeats)


if __name__ == "__main__":
    main()
