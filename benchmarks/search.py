r"""Quality bar of the rule search (issue 6), measured side by side in one run.

  python -m benchmarks.search --budget=3000 --compare_budget=1000 --seeds=0,1,2 --out=runs/bench

1. Best rule vs tuned baselines: a PPO search (`cpu` preset: digits_mlp, the paper's sweep of 7
   learning rates, 1 epoch each, 5 final epochs) with --budget sampled rules; prints the best
   found rule's validation accuracy next to sgd/momentum/adam/rmsprop scored under the same
   protocol, and the wall time.
2. PPO vs random search at an equal budget (--compare_budget, --seeds): mean reward of the last
   20% of samples per seed, mean ± standard deviation over seeds.
   The search selects on the validation accuracy it reports, so the five best rules and the
   baselines are also re-scored with --rescore_seeds fresh evaluation keys (new initial weights,
   minibatch order and rule noise).
3. Throughput: rules sampled per hour and the fraction of wall time outside the evaluator
   (controller sampling and updates, fingerprints, bookkeeping; compilation of the evaluator
   counts as inside, the controller's as outside). The log of each run shows it per iteration.
"""

import os
import time

import jax
import numpy as np
from absl import app, flags

from lopt import rules
from lopt.search import driver, strategies, tasks
from lopt.search.evaluator import evaluate

BUDGET = flags.DEFINE_integer("budget", 3000, "Rules sampled by the PPO run of part 1.")
COMPARE_BUDGET = flags.DEFINE_integer("compare_budget", 1000, "Rules per run in part 2.")
SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of part 2.")
PRESET = flags.DEFINE_string("preset", "cpu", "Search preset of every run.")
OUT = flags.DEFINE_string("out", "runs/benchmark_search", "Output directory.")
SKIP_BEST = flags.DEFINE_bool("skip_best", False, "Skip part 1.")
RESCORE_SEEDS = flags.DEFINE_list("rescore_seeds", ["1", "2", "3"], "Evaluation seeds for "
                                  "re-scoring the best rules of part 1.")


def _search(strategy: strategies.Strategy, budget: int, seed: int):
    config = driver.SearchConfig.preset(PRESET.value, strategy=strategy, budget=budget)
    out = os.path.join(OUT.value, f"{strategy.name}_{budget}_seed{seed}")
    start = time.time()
    result = driver.run(config, jax.random.key(seed), out=out)
    return config, result, time.time() - start


def _outside_evaluator(result) -> str:
    """Fraction of time outside the evaluator: whole call, and iterations after the first."""
    steady = result.iteration_seconds[1:]
    return (f"{1 - result.evaluator_seconds / result.seconds:.1%} of the whole run, "
            f"{1 - steady[:, 1].sum() / steady[:, 0].sum():.1%} after the first iteration")


def rescore(config, result, seeds) -> None:
    """Prints the mean ± std validation accuracy of the 5 best rules and the baselines over
    fresh evaluation keys."""
    named = [(row["simplified"], row["simplified"]) for row in result.top[:5]]
    named += [(name, row["rule"]) for name, row in result.baselines.items()]
    task = tasks.get(config.task, data_dir=config.data_dir)
    rule_list = [rules.parse(text) for _, text in named]
    accuracies = np.stack([
        evaluate(rule_list, task, config.evaluator, jax.random.key(seed)).val_accuracy
        for seed in seeds])
    print(f"re-scored with evaluation seeds {list(seeds)} (mean ± std):")
    for (name, _), values in zip(named, accuracies.T, strict=True):
        print(f"  {values.mean():.4f} ± {values.std():.4f}  {name}")


def _last_fifth_mean(result) -> float:
    scores = np.array([row["score"] for row in result.rows])
    return float(scores[-max(1, len(scores) // 5):].mean())


def main(argv):
    del argv
    ppo_search = driver.SearchConfig.preset(PRESET.value).strategy  # every preset's is PPO
    random_search = strategies.RandomSearch(space=ppo_search.space,
                                            batch_size=ppo_search.batch_size)
    if not SKIP_BEST.value:
        config, result, seconds = _search(ppo_search, BUDGET.value, 0)
        best = result.top[0]
        distinct = len({row["fingerprint"] for row in result.rows})
        print(f"== 1. best rule, PPO on {config.task}, {len(result.rows)} rules sampled, "
              f"{distinct} distinct (trained), {seconds / 60:.1f} min wall ==")
        print(f"best found: {best['simplified']!r}  {best['score']:.4f}  "
              f"(lr {best['learning_rate']})")
        for name, row in result.baselines.items():
            print(f"{name:>9}: {row['score']:.4f}  (lr {row['learning_rate']})")
        margin = best["score"] - max(row["score"] for row in result.baselines.values())
        print(f"best found - best baseline = {margin:+.4f}")
        rescore(config, result, [int(seed) for seed in RESCORE_SEEDS.value])
        print("== 3. throughput ==")
        print(f"{len(result.rows) / seconds * 3600:.0f} rules sampled/hour, "
              f"{distinct / seconds * 3600:.0f} distinct rules trained/hour; outside the "
              f"evaluator: {_outside_evaluator(result)}")

    print(f"== 2. PPO vs random, {COMPARE_BUDGET.value} rules each, mean reward of the last 20% "
          "==")
    means = {}
    for strategy in (ppo_search, random_search):
        means[strategy.name] = []
        for seed in map(int, SEEDS.value):
            _, result, seconds = _search(strategy, COMPARE_BUDGET.value, seed)
            means[strategy.name].append(_last_fifth_mean(result))
            print(f"{strategy.name:>6} seed {seed}: {means[strategy.name][-1]:.4f}  (best "
                  f"{result.top[0]['score']:.4f}, {seconds:.0f}s, outside the evaluator: "
                  f"{_outside_evaluator(result)})", flush=True)
    for strategy, values in means.items():
        print(f"{strategy:>6}: {np.mean(values):.4f} ± {np.std(values):.4f} over "
              f"{len(values)} seeds")


if __name__ == "__main__":
    app.run(main)
