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
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys

import jax
import jax.numpy as jnp
import optax

from benchmarks.compiled_rule import _tree
from benchmarks.timing import median_seconds
from lopt import gps


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
    print(f"{num_params:,} parameters, float32, {jax.devices()[0].device_kind}")
    for name, seconds in times.items():
        print(f"  {name:28s} {seconds * 1e3:8.3f} ms/step, state {sizes[name]:.1f} numbers "
              f"per parameter, {copies[name]} whole-array copies in the compiled step")
    ratio = times["learned (coordinate-wise)"] / times["optax.adam"]
    print(f"ratio learned / optax.adam: {ratio:.2f}  (target <= 3); without its step scale: "
          f"{times['without its step scale'] / times['optax.adam']:.2f}")


if __name__ == "__main__":
    main()
