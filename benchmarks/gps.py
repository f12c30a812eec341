"""Speed of one trajectory-optimisation GPS iteration, stage by stage (issue 7).

    python benchmarks/gps.py            # paper size: 90 logistic objectives, S=20, T=40, H=25
    python benchmarks/gps.py --smoke    # seconds
    python benchmarks/gps.py --loop_iterations=8 --num_objectives=30   # + loop vs momentum

Times sampling, the model fit (cost expansion; dynamics incl. the mixture) and the trajectory
optimisation (step adaptation + eta search) as separately jitted stages on the same samples,
for the structured and the full dynamics fit. Each stage's achieved GFLOP/s is given as a
fraction of the float64 matrix-product throughput measured in the same run. FLOPs are counted
analytically from the dominant dense operations (formulas in `stage_flops`), with the
measured number of EM iterations and eta-search passes; index shifts count as zero FLOPs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lopt import gps, objectives  # noqa: E402
from lopt.gps import trajectory_opt  # noqa: E402


def matmul_gflops(size: int = 1024, repeats: int = 5) -> float:
    """Best-of-`repeats` float64 GFLOP/s of a `size` x `size` matrix product."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float64)
    product = jax.jit(lambda x, y: x @ y)
    product(a, a).block_until_ready()
    best = min(_timed(product, a, a)[1] for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(function, *args):
    started = time.perf_counter()
    out = function(*args)
    jax.block_until_ready(out)
    return out, time.perf_counter() - started


def stage_flops(config, dim, num_objectives, num_points, gmm_iterations, lqg_passes):
    """Dominant FLOPs of each stage (dense products, factorisations, Hessians)."""
    layout = config.features.layout(dim)
    dx, du, dz = layout.size, dim, layout.observation_size
    n = dx + du
    s, t = config.num_samples, config.horizon
    steps = num_objectives * t
    dy = dz if config.structured_dynamics else dx
    d = n + dy
    k = config.gmm_components
    m = min(config.gmm_max_points, steps * s)
    sampling = steps * s * (2 * du * dx + 8 * num_points * dim)
    expansion = num_objectives * s * (t + 1) * 4 * num_points * dim * dim
    gmm = gmm_iterations * (4 * m * k * d * d + k * d**3)
    conditional = steps * (2 * s * k * d * d + 2 * k * d * d + 2 * s * d * d + n**3 / 3
                           + 2 * n * n * dy + 2 * n * dy * dy)
    controller = 2 * dx * dx * du + 2 * du * du * dx + 2 * du * dx * dx + 2 * du * du * dx
    if config.structured_dynamics:
        pull = 4 * n * n * dz + 2 * n * dz * dz
        push = 2 * dx * n * dz + 2 * n * n * dz + 2 * n * dz * dz
    else:
        pull = 2 * dx * dx * n + 2 * n * n * dx
        push = 2 * dx * n * n + 2 * dx * dx * n
    kl = 2 * du * dx * dx + 2 * du * du * dx
    per_pass = steps * (pull + push + controller + kl)
    optimise = (lqg_passes + 1) * per_pass  # + the forward pass of the current controller
    return {"sampling": sampling, "cost expansion": expansion, "mixture (EM)": gmm,
            "dynamics fit": conditional, "trajectory opt": optimise}


def benchmark(config, family, num_objectives, key, peak):
    """Times one iteration's stages for the structured and the full fit; prints a table."""
    problems = family.sample(key, num_objectives)
    x0 = family.init(jax.random.fold_in(key, 1), num_objectives)
    state, _ = jax.jit(trajectory_opt.initial_state, static_argnums=(0, 1))(
        config, family, problems, x0)
    sample = jax.jit(trajectory_opt.sample_stage, static_argnums=(0, 1))
    fit = jax.jit(trajectory_opt.fit_stage, static_argnums=(0, 1))
    optimise = jax.jit(trajectory_opt.optimise_stage, static_argnums=(0, 1))
    samples, _ = _timed(sample, config, family, problems, x0, state, key)
    samples, sample_seconds = _timed(sample, config, family, problems, x0, state, key)
    rows = []
    for structured in (True, False):
        variant = dataclasses.replace(config, structured_dynamics=structured)
        model, fit_compile = _timed(fit, variant, family, problems, samples, key)
        model, fit_seconds = _timed(fit, variant, family, problems, samples, key)
        (_, solution, _), opt_compile = _timed(optimise, variant, family, model, state)
        (_, solution, _), opt_seconds = _timed(optimise, variant, family, model, state)
        flops = stage_flops(variant, family.dim, num_objectives, _num_points(problems),
                            int(model.mixture.num_iterations),
                            int(jnp.max(solution.num_passes)))
        name = "structured" if structured else "full"
        fit_flops = flops["cost expansion"] + flops["mixture (EM)"] + flops["dynamics fit"]
        rows += [
            (name, "sampling", sample_seconds, flops["sampling"]),
            (name, "fit (cost + GMM + dynamics)", fit_seconds, fit_flops),
            (name, "trajectory opt (eta search)", opt_seconds, flops["trajectory opt"]),
            (name, "iteration total", sample_seconds + fit_seconds + opt_seconds,
             flops["sampling"] + fit_flops + flops["trajectory opt"]),
        ]
        print(f"[{name}] compile+run fit {fit_compile:.1f}s, optimise {opt_compile:.1f}s; "
              f"EM iterations {int(model.mixture.num_iterations)}, eta-search passes "
              f"max {int(jnp.max(solution.num_passes))} mean "
              f"{float(jnp.mean(solution.num_passes)):.1f}; mean KL "
              f"{float(jnp.mean(solution.kl)):.3f}", flush=True)
    print(f"\nfloat64 matmul throughput (1024^3): {peak:.1f} GFLOP/s")
    print(f"{'dynamics':<11}| {'stage':<28}| {'seconds':>8} | {'GFLOP':>8} | {'GFLOP/s':>8} "
          f"| {'of matmul':>9}")
    for name, stage, seconds, count in rows:
        rate = count / seconds / 1e9
        print(f"{name:<11}| {stage:<28}| {seconds:8.3f} | {count / 1e9:8.3f} | {rate:8.2f} "
              f"| {rate / peak:9.1%}")


def _num_points(problems):
    return jax.tree.leaves(problems)[0].shape[1]


def mean_minimum(family, problems, x0, num_newton_steps=50):
    """Mean over objectives of min f, by Newton from `x0` with a step chosen from 2^-k, k=0..20
    (and 0, so f never increases); for convex families."""
    step_sizes = jnp.concatenate([2.0 ** -jnp.arange(21.0), jnp.zeros(1)])

    def newton(problem, x):
        def step(x, _):
            gradient = jax.grad(family.loss, argnums=1)(problem, x)
            hessian = jax.hessian(family.loss, argnums=1)(problem, x)
            direction = jnp.linalg.solve(hessian + 1e-9 * jnp.eye(x.shape[0]), gradient)
            trials = x - step_sizes[:, None] * direction
            values = jax.vmap(lambda y: family.loss(problem, y))(trials)
            return trials[jnp.argmin(jnp.where(jnp.isfinite(values), values, jnp.inf))], None

        x, _ = jax.lax.scan(step, x, None, length=num_newton_steps)
        return family.loss(problem, x)

    with jax.enable_x64():
        problems = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64)
                                if jnp.issubdtype(a.dtype, jnp.floating) else a, problems)
        return float(jnp.mean(jax.jit(jax.vmap(newton))(problems, x0)))


def loop_improvement(config, family, num_objectives, iterations, key):
    """Runs the trajectory-only loop and prints its cost against the momentum start."""
    problems = family.sample(key, num_objectives)
    result = gps.train_trajectories(family, problems, config, jax.random.fold_in(key, 2),
                                    num_iterations=iterations)
    momentum = result.history[0]["momentum_cost"]
    minimum = mean_minimum(family, problems, result.x0)
    print(f"\nmean f(x_t) over t=1..{config.horizon}, noiseless controllers, "
          f"{num_objectives} training objectives; momentum initialisation {momentum:.5f}, "
          f"mean minimum {minimum:.5f}")
    for record in result.history:
        gain = 1 - record["controller_cost"] / momentum
        excess = 1 - (record["controller_cost"] - minimum) / (momentum - minimum)
        print(f"  iteration {record['iteration']}: controllers {record['controller_cost']:.5f} "
              f"({gain:+.1%} lower; excess over the minimum {excess:+.1%} lower), "
              f"samples {record['sample_cost']:.5f}, KL "
              f"{record['kl']:.2f}/{record['kl_bound']:.2f}, eta {record['eta']:.3g}, "
              f"{record['seconds']:.1f}s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes, seconds")
    parser.add_argument("--num_objectives", type=int, default=None,
                        help="training objectives (default 90, smoke 6)")
    parser.add_argument("--loop_iterations", type=int, default=0,
                        help="also run the trajectory-only loop this many iterations")
    parser.add_argument("--skip_stages", action="store_true", help="only the loop")
    args = parser.parse_args(argv)
    config = gps.Config.preset("smoke" if args.smoke else "paper")
    num_objectives = args.num_objectives or (6 if args.smoke else 90)
    if num_objectives < 1:
        parser.error(f"--num_objectives must be positive, got {num_objectives}")
    family = objectives.logistic_regression()
    key = jax.random.key(0)
    layout = config.features.layout(family.dim)
    print(f"logistic regression, {num_objectives} objectives, S={config.num_samples}, "
          f"T={config.horizon}, H={config.features.history}, dX={layout.size}, dU={family.dim}, "
          f"devices {jax.devices()}", flush=True)
    if not args.skip_stages:
        with jax.enable_x64():
            benchmark(config, family, num_objectives, key, matmul_gflops())
    if args.loop_iterations:
        loop_improvement(config, family, num_objectives, args.loop_iterations, key)


if __name__ == "__main__":
    main()
