r"""Throughput of the population evaluator against a hand-written, fused optax.adam training.

  python -m benchmarks.evaluator [--population=256] [--repeats=5] [--memory_population=1024]

Prints, measured side by side in one run on `digits_mlp` with the default protocol (sweep of
7 learning rates for one epoch, then five epochs with the best one):
  * candidates/second for a population of random depth-2 rules (after compilation);
  * the ratio of the evaluator's per-candidate cost to the same protocol run as one fused,
    vmapped `optax.adam` training (same children, same members, same steps): the floor.
    The two are timed interleaved (evaluator, adam, evaluator, adam, ...) so that load from
    other processes affects both alike; the ratio is the median of the per-pair ratios;
  * the number of compilations while scoring a second population of the same size (0);
  * peak resident memory while scoring `--memory_population` candidates in chunks.
"""

import argparse
import resource
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt import rules
from lopt.search import evaluator, tasks


def random_population(key, size, depth=2):
    return jax.vmap(partial(rules.random_tokens, depth=depth))(jax.random.split(key, size))


def adam_protocol(task, config, num_candidates, key):
    """The evaluator's protocol with every member running optax.adam (lr per member)."""
    rates = jnp.asarray(config.learning_rates, jnp.float32)
    data = evaluator._device_data(task)
    init_params = task.init(jax.random.fold_in(key, 0))
    steps = config.epoch_steps(task)

    @jax.jit
    def train(learning_rates, indices):
        members = learning_rates.shape[0]
        params = jax.tree.map(lambda p: jnp.broadcast_to(p, (members, *p.shape)), init_params)
        opt = optax.scale_by_adam()
        state = jax.vmap(opt.init)(params)

        def step(carry, idx):
            params, state = carry
            loss, grads = jax.vmap(jax.value_and_grad(task.loss), in_axes=(0, None, None))(
                params, data[0][idx], data[1][idx])
            updates, state = jax.vmap(opt.update)(grads, state)
            params = jax.tree.map(lambda p, u: p - learning_rates.reshape(
                (-1,) + (1,) * (p.ndim - 1)) * u, params, updates)
            return (params, state), loss

        (params, _), losses = jax.lax.scan(step, (params, state), indices)
        accuracy = jax.vmap(task.accuracy, in_axes=(0, None, None))(params, data[2], data[3])
        return accuracy, losses

    def run():
        sweep_idx = evaluator._batch_indices(key, len(data[1]), config.batch_size, steps,
                                             config.sweep_epochs, 1)[0]
        final_idx = evaluator._batch_indices(key, len(data[1]), config.batch_size, steps,
                                             config.final_epochs, 1)[0]
        accuracy, _ = train(jnp.tile(rates, num_candidates), sweep_idx)
        best = rates[jnp.argmax(accuracy.reshape(num_candidates, -1), axis=1)]
        return train(best, final_idx)[0].block_until_ready()

    return run


def interleaved_seconds(candidates, repeats):
    """Wall and process CPU seconds, each [repeats, len(candidates)], of each candidate,
    alternating within a repeat. CPU seconds (all threads) move less with other processes'
    load than wall seconds on a shared machine."""
    wall, cpu = np.zeros((2, repeats, len(candidates)))
    for repeat in range(repeats):
        for index, function in enumerate(candidates):
            start, start_cpu = time.perf_counter(), time.process_time()
            function()
            wall[repeat, index] = time.perf_counter() - start
            cpu[repeat, index] = time.process_time() - start_cpu
    return wall, cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory_population", type=int, default=1024)
    args = parser.parse_args()
    task = tasks.digits_mlp()
    config = evaluator.EvaluatorConfig(chunk_size=args.population)
    key = jax.random.key(0)
    first = random_population(jax.random.key(1), args.population)
    second = random_population(jax.random.key(2), args.population)

    start = time.perf_counter()
    evaluator.evaluate(first, task, config, key)
    compile_and_run = time.perf_counter() - start
    compiled = evaluator._score_members_sharded._cache_size()
    evaluator.evaluate(second, task, config, key)
    new_compilations = evaluator._score_members_sharded._cache_size() - compiled

    adam_run = adam_protocol(task, config, args.population, key)
    adam_run()
    times, cpu_times = interleaved_seconds(
        [lambda: evaluator.evaluate(second, task, config, key), adam_run], args.repeats)
    rule_seconds, adam_seconds = np.median(times, axis=0)
    ratios, cpu_ratios = times[:, 0] / times[:, 1], cpu_times[:, 0] / cpu_times[:, 1]

    print(f"population {args.population} random depth-2 rules on digits_mlp, "
          f"{len(config.learning_rates)} learning rates, {config.sweep_epochs}+"
          f"{config.final_epochs} epochs of {config.epoch_steps(task)} steps, "
          f"{jax.device_count()} device(s)")
    print(f"first population (compile + run): {compile_and_run:.1f} s")
    print(f"evaluator (median): {rule_seconds:.2f} s = "
          f"{args.population / rule_seconds:.1f} candidates/s = "
          f"{3600 * args.population / rule_seconds:,.0f} candidates/hour")
    print(f"fused optax.adam, same protocol (median): {adam_seconds:.2f} s")
    print(f"per-candidate cost ratio evaluator / fused adam: {np.median(ratios):.2f} "
          f"(median of {args.repeats} interleaved pairs, range {ratios.min():.2f}-"
          f"{ratios.max():.2f}; target <= 2.0); in CPU seconds: {np.median(cpu_ratios):.2f} "
          f"(range {cpu_ratios.min():.2f}-{cpu_ratios.max():.2f})")
    print(f"compilations while scoring the second population: {new_compilations} (target 0)")

    big = random_population(jax.random.key(3), args.memory_population)
    evaluator.evaluate(big, task, evaluator.EvaluatorConfig(chunk_size=64), key)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory after scoring {args.memory_population} candidates in chunks "
          f"of 64: {peak_gib:.2f} GiB (target < 4)")


if __name__ == "__main__":
    main()
