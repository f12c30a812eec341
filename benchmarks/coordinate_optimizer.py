"""Per-step time and state size of the coordinate-wise learned optimizer against optax.adam.

    python -m benchmarks.coordinate_optimizer [--learned=DIR]

On the ~1M-parameter float32 pytree of `benchmarks.compiled_rule`, one jitted step (update
with the objective value, apply, buffers donated) of `lopt.gps.as_optax` of a coordinate-wise
learned optimizer (the one in DIR, else the shipped `lopt.gps.pretrained("neural_nets")`,
step-scale adaptation included) against `optax.adam`. Target (issue #19): within 3x Adam's
step time. Beside them, the same optimizer without its step scale (gain 0): what the
adaptation's extra vector of state and its reduction cost. Also prints each optimizer's state
size in numbers per parameter and the number of copies of whole arrays (at least 100,000
numbers) XLA put in its compiled step: each costs a read and a write of one vector.

Steps are timed twice: back to back, as the target is stated, where a working set (params,
gradient and state) smaller than the CPU's last-level cache stays in it between steps, as
Adam's does on our 2-core box and the learned optimizer's does not; and with the caches
evicted before every step (a pass over `EVICTION_BYTES` outside the timed span), as in a
training loop, whose forward and backward passes run between two optimizer steps. The
working sets and the cache size (where Linux tells it) are printed.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import optax

from benchmarks.compiled_rule import _tree
from benchmarks.timing import median_seconds
from lopt import gps

EVICTION_BYTES = 256 * 2**20  # larger than the last-level cache of the CPUs we run on


def _learned():
    for argument in sys.argv[1:]:
        if argument.startswith("--learned="):
            return gps.load(argument.split("=", 1)[1])
    return gps.pretrained("neural_nets")


def _step(optimizer):
    def step(params, state, grads, value):
        updates, state = optimizer.update(grads, state, params, value=value)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def _last_level_cache() -> str:
    caches = sorted(pathlib.Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"))
    return caches[-1].read_text().strip() if caches else "unknown"


def _large_copies(step, params, state, grads) -> int:
    """Copy instructions of at least 100,000 elements in the compiled step."""
    text = step.lower(params, state, grads, jnp.float32(1.0)).compile().as_text()
    shapes = re.findall(r"= \w+\[([\d,]+)\]\S* copy\(", text)
    return sum(math.prod(int(d) for d in shape.split(",")) >= 100_000 for shape in shapes)


def main():
    grads = _tree(jax.random.key(1))
    num_params = sum(leaf.size for leaf in jax.tree.leaves(grads))
    learned = _learned()
    optimizers = {"learned (coordinate-wise)": gps.as_optax(learned),
                  "without its step scale": gps.as_optax(dataclasses.replace(learned,
                                                                             scale_gain=0.0)),
                  "optax.adam": optax.with_extra_args_support(optax.adam(1e-3))}
    runners, sizes, copies = {}, {}, {}
    for name, optimizer in optimizers.items():
        step = _step(optimizer)
        params = _tree(jax.random.key(0))
        carry = [params, optimizer.init(params)]
        sizes[name] = sum(leaf.size for leaf in jax.tree.leaves(carry[1])) / num_params
        copies[name] = _large_copies(step, *carry, grads)

        def run(step=step, carry=carry):
            carry[0], carry[1] = step(carry[0], carry[1], grads, jnp.float32(1.0))
            return carry[0]

        runners[name] = run
    times = median_seconds(runners)
    evict = jax.jit(lambda block: block + 1, donate_argnums=0)
    block = [jnp.zeros(EVICTION_BYTES // 4, jnp.float32)]

    def evict_caches():
        block[0] = evict(block[0])
        return block[0]

    cold = median_seconds(runners, repeats=9, prepare=evict_caches)
    print(f"{num_params:,} parameters, float32, {jax.devices()[0].device_kind}, last-level "
          f"cache {_last_level_cache()}")
    for name, seconds in times.items():
        working_set = (2 + sizes[name]) * num_params * 4 / 2**20
        print(f"  {name:28s} {seconds * 1e3:8.3f} ms/step ({cold[name] * 1e3:.3f} with caches "
              f"evicted), state {sizes[name]:.1f} numbers per parameter (working set "
              f"{working_set:.0f} MiB), {copies[name]} whole-array copies in the compiled step")
    for label, measured in (("back to back", times), ("caches evicted", cold)):
        ratio = measured["learned (coordinate-wise)"] / measured["optax.adam"]
        print(f"ratio learned / optax.adam, {label}: {ratio:.2f}  (target <= 3); without its "
              f"step scale: {measured['without its step scale'] / measured['optax.adam']:.2f}")


if __name__ == "__main__":
    main()
