"""Learn an optimizer for your own family of objectives: ridge regression problems.

    python -m experiments.train_gps --family=examples.custom_family:Ridge --config=smoke \
        --num_train=8 --out=runs/ridge
"""
import dataclasses

import jax
import jax.numpy as jnp

import lopt


@dataclasses.dataclass(frozen=True)  # frozen: hashable settings, the family's identity
class Ridge(lopt.objectives.Family):
    num_features: int = 4
    num_points: int = 50
    l2: float = 0.1

    @property
    def dim(self) -> int:
        return self.num_features

    def sample(self, key, num_problems):
        key_inputs, key_weights, key_noise = jax.random.split(key, 3)
        shape = (num_problems, self.num_points)
        inputs = jax.random.normal(key_inputs, (*shape, self.num_features))
        weights = jax.random.normal(key_weights, (num_problems, self.num_features))
        targets = (jnp.einsum("pnd,pd->pn", inputs, weights)
                   + 0.1 * jax.random.normal(key_noise, shape))
        return {"inputs": inputs, "targets": targets}

    def loss(self, problem, x):  # one problem, x of shape [dim]
        residuals = problem["inputs"] @ x - problem["targets"]
        return 0.5 * jnp.mean(residuals**2) + 0.5 * self.l2 * jnp.sum(x**2)


if __name__ == "__main__":
    family = Ridge()
    config = lopt.gps.Config.preset("smoke", loop={"num_iterations": 2})
    learned = lopt.gps.train(family, family.sample(jax.random.key(0), 8), config,
                             jax.random.key(1))
    optimizer = lopt.gps.as_optax(learned)  # update(grads, state, params, value=f(params))
    print("policy cost per iteration:", [round(r["policy_cost"], 4) for r in learned.history])
