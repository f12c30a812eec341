"""Speed of one trajectory-optimisation GPS iteration, stage by stage (issue 7).

    python benchmarks/gps.py            # paper size: 90 logistic objectives, S=20, T=40, H=25
    python benchmarks/gps.py --smoke    # seconds
    python benchmarks/gps.py --variants=structured --repeats=5
    python benchmarks/gps.py --loop_iterations=8 --num_objectives=30   # + loop vs momentum
    python benchmarks/gps.py --warm_iterations=0   # time the first iteration (cold eta search)

Times sampling, the model fit (cost expansion; dynamics incl. the mixture) and the trajectory
optimisation (step adaptation + eta search) as separately jitted stages on the same samples,
for the structured and the full dynamics fit, `--repeats` times each; the table gives the
median and the range. The timed iteration follows `--warm_iterations` full GPS iterations
(default 1), so, like every iteration but the first, its eta searches start from the
previous eta (`lqg.optimise`); `--warm_iterations=0` times the first iteration. Each stage's
achieved GFLOP/s (at its median time) is given as a fraction of the float64 matrix-product
throughput measured in the same run (median of repeated 1024^3 products before and after the
stages, so both see the same machine load).

How FLOPs are counted (`stage_flops`): the FLOPs of the algorithm as it runs, from its dense
operations: an [m, k] x [k, n] product counts 2 m k n, a Cholesky factorisation of size n
counts n^3 / 3, a triangular solve with r right-hand sides n^2 r, a Hessian of the objective
with P data points 4 P dim^2 per point; the measured number of EM iterations and the mean
number of eta-search passes per objective multiply them. Index shifts and copies (the known
part of the dynamics, applied as slices) count zero, and so do elementwise additions, so the
counts are lower bounds on the work done, not inflated ones. Symmetric updates X + X^T count
the product X once.

The stages run on one CPU device unless XLA_FLAGS=--xla_force_host_platform_device_count=N
splits the per-objective work over N devices (`lopt.parallel`). GPS makes no LAPACK call
(`lopt.gps.small_linalg`): with jaxlib's batched Cholesky, N equal to the number of cores
hung the mixture's EM loop (docs/decisions.md, "Two CPU devices").
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lopt import gps, objectives  # noqa: E402
from lopt.gps import trajectory_opt  # noqa: E402


def matmul_seconds(size: int = 1024, repeats: int = 5) -> list[float]:
    """Seconds of `repeats` float64 `size` x `size` matrix products (after a warm-up)."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float64)
    product = jax.jit(lambda x, y: x @ y)
    product(a, a).block_until_ready()
    return [_timed(product, a, a)[1] for _ in range(repeats)]


def _timed(function, *args):
    started = time.perf_counter()
    out = function(*args)
    jax.block_until_ready(out)
    return out, time.perf_counter() - started


def stage_flops(config, dim, num_objectives, num_points, gmm_iterations, lqg_passes):
    """FLOPs of each stage as the algorithm runs them (counting rules in the module doc)."""
    layout = config.features.layout(dim)
    dx, du, dz = layout.size, dim, layout.observation_size
    n = dx + du
    s, t = config.rollouts.num_samples, config.rollouts.horizon
    steps = num_objectives * t
    dy = dz if config.dynamics.structured else dx
    d = n + dy
    k = config.dynamics.gmm_components
    m = min(config.dynamics.gmm_max_points, steps * s)
    sampling = steps * s * (2 * du * dx + 8 * num_points * dim)
    expansion = num_objectives * s * (t + 1) * 4 * num_points * dim * dim
    # EM: whitening GEMM and M-step scatter (2 m k d^2 each), Cholesky + inverse per component.
    gmm = gmm_iterations * (4 * m * k * d * d + k * d**3 / 3 + k * d**3)
    # Per objective and step: responsibilities of the S points, mixed prior, empirical
    # scatter, Cholesky of the input block, the solve for F and the noise.
    conditional = steps * (2 * s * k * d * d + 2 * k * d * d + 2 * s * d * d + n**3 / 3
                           + 2 * n * n * dy + 2 * n * dy * dy)
    # LQG backward step (`lqg.expanded_backward_pass`): A^T = E^T V J + 1/2 (E^T V E) G, Q's
    # action rows, the Cholesky solves, and V' from one [dX, dY + 2 dU] x [dY + 2 dU, dX]
    # product. The reference's P K_ref is computed once per search (`lqg.reference_terms`).
    backward = (2 * dy * dy * n + 4 * du * dy * n + 2 * n * dy
                + du * du * (dx + 1) * 2 + du**3 / 3 + 2 * dx * dx * (dy + 2 * du))
    once = 2 * du * du * dx
    # Forward step (`lqg.expanded_forward_pass`): G^ = G_s + G_u K, [K; K - K_ref; G^] Sigma,
    # the observation and action covariances and the KL's trace; with the cost (not in the
    # eta search) also the trace 2 n^2 of the cost Hessian with the covariance.
    forward = (2 * dy * du * dx + 2 * (2 * du + dy) * dx * dx + 2 * du * du * dx
               + 2 * dy * dy * dx + 2 * dy * du * du + 2 * dy * dx * du + 2 * du * du * dx)
    forward_with_cost = forward + 2 * n * n
    # The eta search's passes (mean over objectives: each runs its own search), and two
    # forward passes with the cost: the current controller's and the chosen one's.
    optimise = steps * (lqg_passes * (backward + forward) + 2 * forward_with_cost + once)
    return {"sampling": sampling, "cost expansion": expansion, "mixture (EM)": gmm,
            "dynamics fit": conditional, "trajectory opt": optimise}


def _num_points(problems):
    return jax.tree.leaves(problems)[0].shape[1]


def _repeated(repeats, function, *args):
    """(output, compile+first-run seconds, list of `repeats` run seconds)."""
    out, first = _timed(function, *args)
    return out, first, [_timed(function, *args)[1] for _ in range(repeats)]


def benchmark(config, family, num_objectives, key, variants, repeats, warm_iterations):
    """Times one iteration's stages for each dynamics variant (after `warm_iterations` full
    iterations); prints a table."""
    matmul = matmul_seconds()
    problems = family.sample(key, num_objectives)
    x0 = family.init(jax.random.fold_in(key, 1), num_objectives)
    state, _ = jax.jit(trajectory_opt.initial_state, static_argnums=(0, 1, 2))(
        config.rollouts, config.features, family, problems, x0)
    sample = jax.jit(trajectory_opt.sample_stage, static_argnums=(0, 1, 2))
    fit = jax.jit(trajectory_opt.fit_stage, static_argnums=(0, 1, 2, 3))
    optimise = jax.jit(trajectory_opt.optimise_stage, static_argnums=(0, 1, 2))
    for index in range(warm_iterations):
        key_sample, key_fit = jax.random.split(jax.random.fold_in(key, index))
        samples = sample(config.rollouts, config.features, family, problems, x0,
                         state.controller, key_sample)
        model = fit(config.dynamics, config.lqg, config.features, family, problems, samples,
                    key_fit)
        state, _, _, _ = optimise(config.lqg, config.features, family, model, state)
    samples, _, sample_times = _repeated(repeats, sample, config.rollouts, config.features,
                                         family, problems, x0, state.controller, key)
    rows = []
    for name in variants:
        variant = config.replace(dynamics={"structured": name == "structured"})
        model, fit_compile, fit_times = _repeated(repeats, fit, variant.dynamics, variant.lqg,
                                                  variant.features, family, problems, samples,
                                                  key)
        (_, solution, _, _), opt_compile, opt_times = _repeated(
            repeats, optimise, variant.lqg, variant.features, family, model, state)
        flops = stage_flops(variant, family.dim, num_objectives, _num_points(problems),
                            int(model.mixture.num_iterations),
                            float(jnp.mean(solution.num_passes)))
        fit_flops = flops["cost expansion"] + flops["mixture (EM)"] + flops["dynamics fit"]
        totals = [a + b + c for a, b, c in zip(sample_times, fit_times, opt_times, strict=True)]
        rows += [
            (name, "sampling", sample_times, flops["sampling"]),
            (name, "fit (cost + GMM + dynamics)", fit_times, fit_flops),
            (name, "trajectory opt (eta search)", opt_times, flops["trajectory opt"]),
            (name, "iteration total", totals,
             flops["sampling"] + fit_flops + flops["trajectory opt"]),
        ]
        print(f"[{name}] compile+run fit {fit_compile:.1f}s, optimise {opt_compile:.1f}s; "
              f"EM iterations {int(model.mixture.num_iterations)}, eta-search passes "
              f"max {int(jnp.max(solution.num_passes))} mean "
              f"{float(jnp.mean(solution.num_passes)):.1f}; mean KL "
              f"{float(jnp.mean(solution.kl)):.3f}", flush=True)
    matmul += matmul_seconds()
    peak = 2 * 1024**3 / statistics.median(matmul) / 1e9
    print(f"\nfloat64 matmul throughput (1024^3): median {peak:.1f} GFLOP/s, range "
          f"{2 * 1024**3 / max(matmul) / 1e9:.1f}-{2 * 1024**3 / min(matmul) / 1e9:.1f}; "
          f"stage times of GPS iteration {warm_iterations + 1}: median [range] of {repeats}")
    print(f"{'dynamics':<11}| {'stage':<28}| {'seconds':>22} | {'GFLOP':>8} | {'GFLOP/s':>8} "
          f"| {'of matmul':>9}")
    for name, stage, times, count in rows:
        seconds = statistics.median(times)
        rate = count / seconds / 1e9
        spread = f"{seconds:7.3f} [{min(times):.3f}-{max(times):.3f}]"
        print(f"{name:<11}| {stage:<28}| {spread:>22} | {count / 1e9:8.3f} | {rate:8.2f} "
              f"| {rate / peak:9.1%}")


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
    result = gps.train_trajectories(family, problems,
                                    config.replace(loop={"num_iterations": iterations}),
                                    jax.random.fold_in(key, 2))
    momentum = result.initial_cost
    minimum = mean_minimum(family, problems, result.x0)
    print(f"\nmean f(x_t) over t=1..{config.rollouts.horizon}, noiseless controllers, "
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
    parser.add_argument("--variants", default="structured,full",
                        help="comma-separated dynamics variants to time: structured, full")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each stage")
    parser.add_argument("--warm_iterations", type=int, default=1,
                        help="full GPS iterations before the timed one (0: time the first)")
    args = parser.parse_args(argv)
    # The fitted (GMM) dynamics, whose structured and full variants this script compares.
    config = gps.Config.preset("smoke" if args.smoke else "paper", dynamics={"model": "fitted"})
    num_objectives = args.num_objectives or (6 if args.smoke else 90)
    if num_objectives < 1:
        parser.error(f"--num_objectives must be positive, got {num_objectives}")
    variants = args.variants.split(",")
    if not set(variants) <= {"structured", "full"}:
        parser.error(f"--variants must name structured and/or full, got {args.variants!r}")
    if args.repeats < 1:
        parser.error(f"--repeats must be positive, got {args.repeats}")
    if args.warm_iterations < 0:
        parser.error(f"--warm_iterations must be non-negative, got {args.warm_iterations}")
    family = objectives.logistic_regression()
    key = jax.random.key(0)
    layout = config.features.layout(family.dim)
    print(f"logistic regression, {num_objectives} objectives, S={config.rollouts.num_samples}, "
          f"T={config.rollouts.horizon}, H={config.features.history}, dX={layout.size}, "
          f"dU={family.dim}, devices {jax.devices()}", flush=True)
    if not args.skip_stages:
        with jax.enable_x64():
            benchmark(config, family, num_objectives, key, variants, args.repeats,
                      args.warm_iterations)
    if args.loop_iterations:
        loop_improvement(config, family, num_objectives, args.loop_iterations, key)


if __name__ == "__main__":
    main()
