"""Per-member cost of the population interpreter against compiled fixed rules.

    python -m benchmarks.interpreter [--member-sizes 4096,65536]

For a population of 256 random depth-2 rules (sampled under the paper's constraints), one
optimizer step per member (moving averages, rule, parameter update) is timed, in one run,
interleaved:
  - `interpret`: one `jax.vmap`, every member computing every formula of the rule language
    (target: at most 2.0 times a fixed rule), with the default implementation of exp, log
    and the random draws (`lopt.cpu_kernels` on a CPU);
  - `interpret plain`: the same with the plain specification (`implementation="plain"`:
    `jnp.exp`, `jnp.log`, `jax.random`), the speed the CPU kernels are measured against;
  - `map+switch`, the alternative design measured side by side (not used by `lopt`): a
    `lax.map` over members whose body runs one `lax.switch` per slot on the member's unbatched
    (operand, unary) tokens and one per level on its binary token, so that only the chosen
    formulas run; its directions are checked against `interpret`'s before timing;
  - fixed rules compiled with `to_optax` and vmapped over the 256 members: PowerSign, and each
    of 8 members of the population (their mean is what compiling every member would cost).
It also counts the XLA compilations caused by a second population of the same shape (must be 0
for every design).
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
import functools
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np

from lopt import rules
from lopt.rules import semantics
from lopt.rules.expression import OPERANDS, WEIGHT_OPERANDS, WEIGHT_SCALES
from lopt.rules.tokens import BINARY_TOKENS, TOKENS_PER_LEVEL, UNARY_TOKENS

POPULATION = 256
DEPTH = 2
LEARNING_RATE = 1e-3
NUM_FIXED_MEMBERS = 8
EPS = 1e-8  # the default ε of lopt.rules
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


@jax.jit
def _map_switch_interpret(codes, moments, params, keys):
    """`rules.interpret`'s values, computed by a loop over members that runs only each member's
    own formulas: per slot one `lax.switch` over (operand, unary) token pairs, per level one
    over binary tokens, their branches the code `to_optax` compiles for each token."""
    return jax.lax.map(lambda member: _map_switch_member(*member), (codes, moments, params, keys))


def _map_switch_member(tokens, moments, params, key):
    numerics = semantics._numerics(None)
    leaf_draws = numerics.draws(key)
    leaves, treedef = jax.tree.flatten(moments.grad)
    trees = (moments.m, moments.v, moments.gamma, params)
    columns = zip(leaves, *(treedef.flatten_up_to(tree) for tree in trees), strict=True)
    return treedef.unflatten([
        _map_switch_leaf(tokens, *column, functools.partial(leaf_draws, leaf, column[0].shape),
                         numerics.exp_or_log)
        for leaf, column in enumerate(columns)])  # fmt: skip


def _map_switch_leaf(tokens, grad, m, v, gamma, weight, draws, exp_or_log):
    """`draws()` gives the leaf's (bits, normal), afresh in every branch: what one branch of a
    `lax.switch` traces must not be reused by another."""
    inverse_denominator = lambda: 1.0 / (jnp.sqrt(v) + EPS)
    operands = {
        "g": lambda: grad, "g2": lambda: grad * grad, "g3": lambda: grad * grad * grad,
        "m": lambda: m, "v": lambda: v, "gamma": lambda: gamma, "one": lambda: jnp.ones_like(grad),
        "noise": lambda: semantics._noise(draws()[1], grad.dtype),
        "adam": lambda: m * inverse_denominator(), "rmsprop": lambda: grad * inverse_denominator(),
    }  # fmt: skip
    bank = [operands[name] for name in OPERANDS[: len(OPERANDS) - len(WEIGHT_OPERANDS)]]
    bank += [lambda scale=scale: (scale * weight).astype(grad.dtype) for scale in WEIGHT_SCALES]
    unary = lambda token, x, bits: semantics._unary(token, x, bits, exp_or_log,
                                                    semantics.choose_static)  # fmt: skip
    binary = lambda token, x, y: semantics._binary(token, x, y, EPS, semantics.choose_static)
    for level in range(len(tokens) // TOKENS_PER_LEVEL):
        level_tokens = tokens[TOKENS_PER_LEVEL * level : TOKENS_PER_LEVEL * (level + 1)]
        first, second, unary1, unary2, binary_token = level_tokens

        def slot(operand, unary_token, slot, level=level, bank=tuple(bank)):
            bits = lambda: draws()[0](1 + 2 * level + slot)
            pairs = itertools.product(range(len(bank)), range(len(UNARY_TOKENS)))
            branches = [lambda o=o, u=u: unary(u, bank[o](), bits) for o, u in pairs]
            return jax.lax.switch(operand * len(UNARY_TOKENS) + unary_token, branches)

        x, y = slot(first, unary1, 0), slot(second, unary2, 1)
        branches = [lambda k=k, x=x, y=y: binary(k, x, y) for k in range(len(BINARY_TOKENS))]
        output = jax.lax.switch(binary_token, branches)
        bank.append(lambda output=output: output)
    return output


def _check_designs_agree(codes, params, grads, keys):
    """Raises if `map+switch` and `interpret` give different directions (after a few steps, so
    that the moments differ)."""
    state = jax.vmap(lambda p, k: rules.init_state(p, key=k))(params, keys)
    for _ in range(3):
        state, moments, step_keys = jax.vmap(rules.advance)(state, grads)
    expected = rules.interpret(codes, moments, params, step_keys)
    actual = _map_switch_interpret(codes, moments, params, step_keys)
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-5, atol=1e-7, err_msg=name)


def _interpreter_runner(interpret, codes, params, grads, keys, in_place: bool):
    """One population step: advance every member's moments, interpret, apply −lr·d."""

    def step(codes, params, state, grads):
        state, moments, step_keys = jax.vmap(rules.advance)(state, grads)
        directions = interpret(codes, moments, params, step_keys)
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
    _check_designs_agree(first_codes, params, grads, keys)
    interpreters = {"interpret": rules.interpret, "map+switch": _map_switch_interpret,
                    "interpret plain": functools.partial(rules.interpret, implementation="plain")}
    designs = list(interpreters)
    modes = {"fresh buffers": False, "in place": True}
    candidates = {}
    for mode, in_place in modes.items():
        runners = {name: _interpreter_runner(interpret, first_codes, params, grads, keys, in_place)
                   for name, interpret in interpreters.items()}  # fmt: skip
        runners["fixed PowerSign"] = _fixed_runner(
            rules.LIBRARY["powersign"], params, grads, keys, in_place)  # fmt: skip
        for index in range(NUM_FIXED_MEMBERS):
            runners[f"fixed member {index}"] = _fixed_runner(
                first[index], params, grads, keys, in_place)  # fmt: skip
        candidates.update({(mode, name): run for name, run in runners.items()})
    times = _median_seconds(candidates, repeats=repeats, calls=3)
    second_population = lambda name: lambda: candidates["fresh buffers", name](second_codes)
    compiles = {name: _count_compiles(second_population(name)) for name in designs}

    print(f"\n{POPULATION} members x {member_size:,} parameters, depth {DEPTH}, float32, "
          f"{jax.devices()[0].device_kind}; us/member with fresh buffers | in place")  # fmt: skip
    per_member = {key: seconds / POPULATION * 1e6 for key, seconds in times["wall"].items()}
    cpu = {key: seconds / POPULATION * 1e6 for key, seconds in times["cpu"].items()}
    names = [name for mode, name in candidates if mode == "fresh buffers"]
    for name in names:
        rule = f"  {first[int(name.split()[-1])]}" if name.startswith("fixed member") else ""
        costs = " | ".join(f"{per_member[mode, name]:9.2f}" for mode in modes)
        print(f"  {name:18s} {costs}{rule}")
    print(f"per-member ratio, design / fixed PowerSign and / mean of {NUM_FIXED_MEMBERS} fixed "
          "members (target <= 2.0 in place), wall [CPU seconds]:")  # fmt: skip
    for mode in modes:
        columns = []
        for design in designs:
            ratios = []
            for costs in (per_member, cpu):
                members = np.mean([costs[mode, f"fixed member {i}"]
                                   for i in range(NUM_FIXED_MEMBERS)])  # fmt: skip
                ratios.append((costs[mode, design] / costs[mode, "fixed PowerSign"],
                               costs[mode, design] / members))  # fmt: skip
            (wall_powersign, wall_members), (cpu_powersign, cpu_members) = ratios
            columns.append(f"{design} {wall_powersign:5.2f} / {wall_members:5.2f} "
                           f"[{cpu_powersign:5.2f} / {cpu_members:5.2f}]")  # fmt: skip
        print(f"  {mode:14s} " + "   ".join(columns))
    counts = ", ".join(f"{design} {count}" for design, count in compiles.items())
    print(f"compilations for the second population: {counts}  (must be 0)")


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
