r"""Reproduces the papers' results on this code: one figure and one markdown table per claim.

  python -m experiments.reproduce --which=lto_logistic --scale=cpu --out=runs/reproduce
  python -m experiments.reproduce --which=all --scale=cpu --out=runs/reproduce --publish

--which (comma-separated, or `all`):
  lto_logistic, lto_robust, lto_mlp  Learning to Optimize Figures 1-3: predicted step descent
                                     against the tuned baselines on 100 unseen problems
  lto_transfer                       Figure 5: the MLP-trained optimizer on 5/6/8/12 Gaussians
  lto_trajectories                   Figure 4: trajectories on random 2-D logistic regression
  lto_nets                           Learning to Optimize Neural Nets: the coordinate-wise
                                     learned optimizer against tuned SGD, momentum, Adam,
                                     AdaGrad and RMSprop on held-out tasks
  lto_vs_rules                       the two halves on the same problems: rules searched on
                                     each family against its learned optimizer (margin of
                                     victory, mean objectives, seconds to obtain each)
  distill                            the logistic-regression policy distilled into a rule by a
                                     search that rewards imitating its steps
  nos_table                          Neural Optimizer Search Table 1 analogue (digits ConvNet;
                                     CIFAR-10 ConvNet too with --data_dir)
  nos_rosenbrock                     Figure 6: PowerSign against Adam, RMSProp, SGD, momentum
  nos_search                         a PPO search (reward curve, Figure 4) and the transfer of
                                     its best rules to digits_convnet and Rosenbrock
  nos_transfer                       sections 5.2-5.3 offline: PowerSign, AddSign and the found
                                     rules against Adam on a character LSTM language model of
                                     Python's standard library (and a Wide ResNet on CIFAR-10
                                     with --data_dir)
  nos_suite                          an evolution search on a suite of three children with a
                                     proxy funnel; its best rules against tuned Adam, RMSprop,
                                     momentum and SGD on fresh seeds, on the suite and on two
                                     held-out children (shipped as lopt.rules.DISCOVERED with
                                     --export_pretrained)
--scale: `smoke` (seconds to minutes; tests), `cpu` (the papers' problem sizes, minutes to an
hour on 2 cores), `paper` (the papers' settings where they fit a CPU).

Writes OUT/NAME/ (figures, report.md and raw numbers) for every experiment and OUT/results.md
with all reports. Long steps log progress; GPS training and the search checkpoint, so a
killed run started again with the same flags resumes. With --publish the figures are copied
to docs/figures/ and the README's `<!-- reproduce:NAME -->` blocks are rewritten, so every
number in the README's Results section comes from this command (--republish does that for the
reports an earlier run left in --out, without running anything). With --export_pretrained the
learned optimizers trained here are written to lopt/pretrained/ with their provenance, and
nos_suite's rules to lopt/rules/discovered.json.
"""

import os
import time

from absl import app, flags, logging

from experiments import common
from experiments.common import (
    prepare_output_dir,
    use_a_host_device_per_core,
    use_single_threaded_eigen,
)
from experiments.reproduction import EXPERIMENTS, lto, nos, report
from lopt import progress

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WHICH = flags.DEFINE_list("which", ["all"], f"Experiments: {', '.join(EXPERIMENTS)} or all.")
SCALE = flags.DEFINE_enum("scale", "cpu", list(lto.SCALES), "Problem sizes and budgets.")
OUT = flags.DEFINE_string("out", None, "Output directory (created if missing).", required=True)
SEED = flags.DEFINE_integer("seed", 0, "Seed of problems, training and evaluation.")
DATA_DIR = flags.DEFINE_string("data_dir", None, "Local cifar-10-batches-py directory "
                               "(adds the CIFAR-10 child to nos_table; the paper-scale search).")
USE_PRETRAINED = flags.DEFINE_bool("use_pretrained", False, "Use the learned optimizers shipped "
                                   "in lopt/pretrained/ instead of training them.")
EXPORT_PRETRAINED = flags.DEFINE_bool("export_pretrained", False, "Write the learned "
                                      "optimizers trained here to lopt/pretrained/ and the "
                                      "rules nos_suite finds to lopt/rules/discovered.json.")
PUBLISH = flags.DEFINE_bool("publish", False, "Copy figures to docs/figures/ and rewrite the "
                            "README's Results blocks.")
REPUBLISH = flags.DEFINE_bool("republish", False, "Publish the reports an earlier run wrote "
                              "into --out, without running anything.")


def selected(names: list[str]) -> list[str]:
    """The experiments named by --which, in EXPERIMENTS order; UsageError for unknown names."""
    if "all" in names:
        return list(EXPERIMENTS)
    unknown = [name for name in names if name not in EXPERIMENTS]
    if unknown or not names:
        raise app.UsageError(f"--which: unknown {unknown or 'empty'}; valid: "
                             f"{', '.join(EXPERIMENTS)} or all")
    return [name for name in EXPERIMENTS if name in names]


def command(which: str) -> str:
    """The command line that regenerates `which` with the current flags."""
    parts = ["python -m experiments.reproduce", f"--which={which}", f"--scale={SCALE.value}"]
    if SEED.value:
        parts.append(f"--seed={SEED.value}")
    if DATA_DIR.value:
        parts.append("--data_dir=DIR")
    if USE_PRETRAINED.value:
        parts.append("--use_pretrained")
    return " ".join(parts)


# The experiments that score rules with `lopt.search.evaluator`: they run on one device, so
# that their scores do not depend on the machine (the per-core devices GPS gets otherwise
# change a float32 child's training beyond round-off where a rule blows up).
RULE_SCORING = frozenset({"distill", "lto_vs_rules", "nos_table", "nos_search", "nos_transfer",
                          "nos_suite"})


def main(argv):
    del argv
    names = selected(WHICH.value)
    if any(name.startswith("lto_") or name == "distill" for name in names):  # GPS trains
        use_single_threaded_eigen()
        if not RULE_SCORING.intersection(names):
            use_a_host_device_per_core()
    if USE_PRETRAINED.value and EXPORT_PRETRAINED.value:
        raise app.UsageError("--use_pretrained and --export_pretrained exclude each other")
    out = prepare_output_dir(OUT.value)
    nos_settings = nos.Settings(
        SCALE.value, out, SEED.value, DATA_DIR.value,
        os.path.join(REPO_ROOT, "lopt", "rules") if EXPORT_PRETRAINED.value else None)
    try:
        nos.check_children(nos_settings)
    except (ValueError, OSError) as error:
        raise app.UsageError(f"--data_dir: {error}") from error
    lto_settings = lto.Settings(
        SCALE.value, out, SEED.value, USE_PRETRAINED.value,
        os.path.join(REPO_ROOT, "lopt", "pretrained") if EXPORT_PRETRAINED.value else None)
    reports = []
    plan = {}
    for name in names:  # experiments without planned stages of their own count as one
        own = {} if REPUBLISH.value else lto.plan(lto_settings, name)
        plan.update(own or {progress.label_in(name, RUN): WHOLE_EXPERIMENT_SHARE})
    with progress.job("reproduce", plan):
        for index, name in enumerate(names, start=1):
            reports.append(_run(index, name, names, out, lto_settings, nos_settings))
    with open(os.path.join(out, "results.md"), "w") as file:
        file.writelines(f"## {result.name}\n\n" + report.markdown(result, result.name) + "\n"
                        for result in reports)
    print(f"Wrote {os.path.join(out, 'results.md')}")


RUN = "run"
WHOLE_EXPERIMENT_SHARE = 30.0  # expected seconds of an experiment without stages of its own


def _run(index, name, names, out, lto_settings, nos_settings):
    """Runs (or, with --republish, reloads) experiment `name`, writes and publishes its report."""
    started = time.time()
    logging.info("[%d/%d] %s at scale %s", index, len(names), name, SCALE.value)
    with progress.scope(name):
        if REPUBLISH.value:
            try:
                result = report.load(os.path.join(out, name))
            except ValueError as error:
                raise app.UsageError(f"--republish: {error}") from error
        else:
            settings = (lto_settings if name.startswith("lto_") or name == "distill"
                        else nos_settings)
            with progress.stage(RUN):
                result = EXPERIMENTS[name](settings, name, command(name))
    path = report.write(result, os.path.join(out, name))
    logging.info("[%d/%d] %s done in %.0fs: %s", index, len(names), name,
                 time.time() - started, result.verdict)
    print(f"{name}: {path}")
    if PUBLISH.value or REPUBLISH.value:
        report.publish(result, os.path.join(out, name), os.path.join(REPO_ROOT, "README.md"),
                       os.path.join(REPO_ROOT, "docs", "figures"))
    return result


if __name__ == "__main__":
    common.run(main)
