r"""Searches for update rules (Neural Optimizer Search) with PPO, evolution or random search.

  python -m experiments.search_rules --strategy=ppo --task=digits_mlp --budget=2000 \
      --config=cpu --out=runs/search
  python -m experiments.search_rules --config=cpu --out=runs/search --resume   # after a kill

`--config` picks a preset of `lopt.search.SearchConfig.preset` (smoke: seconds on a quadratic;
cpu: digits MLP on a laptop CPU; cpu_suite: three children through a proxy funnel,
`lopt.search.suite`; cpu_suite_depth3: the same for depth-3 rules, warm-started from the
paper's Table 1, its full stage under three keys; paper: the CIFAR-10 child at paper scale);
the other flags override its fields when given. `--strategy` names an entry of
`lopt.search.STRATEGIES`: the preset's own strategy (ppo, evolution for the suites) keeps its
settings, another starts from its defaults on the preset's space and batch size; the PPO
flags need --strategy=ppo. Writes into --out results.jsonl, config.json and checkpoint.npz
(see `lopt.search.driver`), and when the search ends
  top_rules.md      the best distinct rules (simplified: `lopt.rules.simplify`, the same update)
                    next to sgd, momentum, adam and rmsprop scored under the same protocol, the
                    search's cache-hit and pruning rates, and the snippet that turns a rule
                    into an optimizer
  reward_curve.png  reward of each sampled rule against the number sampled, with running max
                    and moving mean (the paper's Figure 4)
`--resume` continues the run in --out, which must have been started with the same settings
and seed.

Several processes (hosts) share one search with --coordinator_address, --num_processes and
--process_id (`lopt.distributed`; README, "Several machines"): each iteration's candidates ×
learning rates are split over every process's devices, and only process 0 writes --out.
"""

import dataclasses
import os

import jax
from absl import app, flags

from experiments import common
from lopt import distributed, plotting, progress
from lopt.search import driver, strategies, tasks

TOP_RULES, REWARD_CURVE = "top_rules.md", "reward_curve.png"

STRATEGY = flags.DEFINE_string("strategy", "ppo", "ppo, evolution or random "
                               "(`lopt.search.strategies.STRATEGIES`).")
CONFIG = flags.DEFINE_string("config", "cpu",
                             "Preset: smoke, cpu, cpu_suite, cpu_suite_depth3 or paper.")
TASK = flags.DEFINE_string("task", None, "Child task (default: the preset's): a name of "
                          "lopt.search.tasks.TASKS or 'module:attribute' naming your own.")
DATA_DIR = flags.DEFINE_string("data_dir", None, "Local CIFAR-10 directory (cifar10_* tasks).")
BUDGET = flags.DEFINE_integer("budget", None, "Rules to sample (default: the preset's).")
BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Rules per iteration.")
DEPTH = flags.DEFINE_integer("depth", None, "Levels per rule, 1-3.")
OPERANDS = flags.DEFINE_list("operands", None, "Operand subset (default: all), e.g. "
                             "g,m,v,one,adam.")
UNARIES = flags.DEFINE_list("unaries", None, "Unary subset with constants after a colon "
                            "(default: all), e.g. identity,neg,exp,sign,clip:1e-4.")
BINARIES = flags.DEFINE_list("binaries", None, "Binary subset (default: all), e.g. "
                             "+,-,*,keep_left.")
CHECKPOINT_EVERY = flags.DEFINE_integer("checkpoint_every", None, "Iterations per checkpoint.")
FULL_SEEDS = flags.DEFINE_integer("full_seeds", None, "Evaluation keys the full stage scores "
                                  "each rule under, their mean its score (default: the "
                                  "preset's).")
PROMOTE_FRACTION = flags.DEFINE_float("promote_fraction", None, "Share of each batch's new "
                                      "proxy-trained rules promoted to the full stage (presets "
                                      "with a proxy).")
LEARNING_RATE = flags.DEFINE_float("learning_rate", None, "PPO: controller Adam learning rate "
                                   "(paper: 1e-5).")
ENTROPY_WEIGHT = flags.DEFINE_float("entropy_weight", None, "PPO: entropy bonus (paper: 0.0015).")
BASELINE_DECAY = flags.DEFINE_float("baseline_decay", None, "PPO: reward baseline EMA decay.")
CLIP_EPSILON = flags.DEFINE_float("clip_epsilon", None, "PPO: clip range.")
OUT = flags.DEFINE_string("out", None, "Output directory (created if missing).", required=True)
RESUME = flags.DEFINE_bool("resume", False, "Continue the search in --out.")
SEED = flags.DEFINE_integer("seed", 0, "Seed of the search.")
common.define_distributed_flags()


def _given(**values):
    return {name: value for name, value in values.items() if value is not None}


def _unary(text: str) -> tuple[str, float | None]:
    name, _, constant = text.partition(":")
    return name, float(constant) if constant else None


def make_config() -> driver.SearchConfig:
    """The preset with the given flags applied (see the module docstring); ValueError for
    bad values."""
    if STRATEGY.value not in strategies.STRATEGIES:
        raise ValueError(f"unknown strategy {STRATEGY.value!r}; valid: "
                         f"{', '.join(strategies.STRATEGIES)}")
    if BUDGET.value is not None and BUDGET.value <= 0:
        raise ValueError(f"--budget must be positive, got {BUDGET.value}")
    config = driver.SearchConfig.preset(CONFIG.value)
    vocabulary = dataclasses.replace(config.space.vocabulary, **_given(
        operands=tuple(OPERANDS.value) if OPERANDS.value else None,
        unaries=tuple(map(_unary, UNARIES.value)) if UNARIES.value else None,
        binaries=tuple(BINARIES.value) if BINARIES.value else None))
    space = dataclasses.replace(config.space, vocabulary=vocabulary, **_given(depth=DEPTH.value))
    settings = {"space": space, "batch_size": config.batch_size,
                **_given(batch_size=BATCH_SIZE.value)}
    kind = strategies.STRATEGIES[STRATEGY.value]
    if isinstance(config.strategy, kind):
        strategy = dataclasses.replace(config.strategy, **settings)
    else:
        strategy = kind(**settings)
    ppo_flags = _given(learning_rate=LEARNING_RATE.value, entropy_weight=ENTROPY_WEIGHT.value,
                       baseline_decay=BASELINE_DECAY.value, clip_epsilon=CLIP_EPSILON.value)
    if ppo_flags:
        if not isinstance(strategy, strategies.PPOSearch):
            raise ValueError(f"only --strategy=ppo takes --{', --'.join(ppo_flags)}")
        strategy = dataclasses.replace(strategy,
                                       ppo=dataclasses.replace(strategy.ppo, **ppo_flags))
    proxy = config.proxy
    if PROMOTE_FRACTION.value is not None:
        if proxy is None:
            raise ValueError(f"--promote_fraction needs a preset with a proxy stage; "
                             f"{CONFIG.value} has none")
        proxy = dataclasses.replace(proxy, promote_fraction=PROMOTE_FRACTION.value)
    return dataclasses.replace(config, strategy=strategy, proxy=proxy, **_given(
        task=TASK.value, data_dir=DATA_DIR.value, budget=BUDGET.value,
        full_seeds=FULL_SEEDS.value, checkpoint_every=CHECKPOINT_EVERY.value))


def write_top_rules(path: str, config: driver.SearchConfig, result: driver.SearchResult
                    ) -> None:
    """Markdown table of the best rules (simplified) and the baselines, the sampling summary
    and the export snippet."""
    def line(name, row):
        rate = "diverged" if row["learning_rate"] is None else f"{row['learning_rate']:.0e}"
        return f"| {name} | `{row['simplified']}` | {row['score']:.4f} | {rate} |\n"

    top, baselines = result.top, result.baselines
    summary = driver.sampling_summary(result.rows)

    best_baseline = max(baselines.values(), key=lambda row: row["score"])
    with open(path, "w") as file:
        file.write(f"# Best rules: {config.strategy.name} on {config.task_name}\n\n"
                   f"Score = the search's reward (validation accuracy; negated objective for "
                   f"data-free tasks) after the learning-rate sweep over "
                   f"{list(config.evaluator.learning_rates)}.\n\n"
                   "| rank | rule | score | learning rate |\n|---|---|---|---|\n")
        file.writelines(line(rank + 1, row) for rank, row in enumerate(top))
        file.write("\nBaselines under the same protocol:\n\n"
                   "| name | rule | score | learning rate |\n|---|---|---|---|\n")
        file.writelines(line(name, row) for name, row in baselines.items())
        file.write(f"\nSampled {summary['sampled']} rules: {summary['cache_hits']} cache hits "
                   f"(a rule with the fingerprint of one scored before), {summary['pruned']} "
                   f"pruned (degenerate on the probe inputs, scored untrained), "
                   f"{summary['trained']} trained.\n")
        if top:
            margin = top[0]["score"] - best_baseline["score"]
            file.write(f"\nBest found minus best baseline: {margin:+.4f}.\n")
            rate = top[0]["learning_rate"] or 1e-3
            file.write("\nUse a rule as an optax optimizer:\n\n```python\nimport lopt\n"
                       f"opt = lopt.rules.to_optax(lopt.rules.parse({top[0]['simplified']!r}), "
                       f"{rate:g})\n```\n")


def main(argv):
    del argv
    common.initialize_distributed()
    try:
        config = make_config()
        if config.task in tasks.CIFAR10_TASKS and config.data_dir is None:
            raise ValueError(f"task {config.task} needs --data_dir (a local CIFAR-10 directory)")
        driver.check_output(OUT.value, driver.run_identity(config, jax.random.key(SEED.value)),
                            RESUME.value)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    with progress.job("search_rules", driver.plan(config)):
        result = driver.run(config, jax.random.key(SEED.value), out=OUT.value,
                            resume=RESUME.value)
    if not distributed.is_writer():
        return
    write_top_rules(os.path.join(OUT.value, TOP_RULES), config, result)
    plotting.plot_reward_curve([row["score"] for row in result.rows],
                               os.path.join(OUT.value, REWARD_CURVE),
                               f"{config.strategy.name} on {config.task_name}")
    best = result.top[0]
    print(f"Best rule: {best['simplified']} (score {best['score']:.4f}); wrote {OUT.value}/"
          f"results.jsonl, top_rules.md and reward_curve.png in {result.seconds:.0f}s")


if __name__ == "__main__":
    common.run(main)
