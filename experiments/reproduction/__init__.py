"""The experiments behind `experiments.reproduce`, one function per `--which` value.

Each takes (settings, name, command) and returns a `report.Report`; `lto` holds the Learning
to Optimize experiments, `nos` the Neural Optimizer Search ones. This package defines no
flags, so tests and notebooks can import it.
"""

from experiments.reproduction import distill, lto, lto_vs_rules, nets, nos, nos_suite

EXPERIMENTS = {
    "lto_logistic": lto.family_figure,
    "lto_robust": lto.family_figure,
    "lto_mlp": lto.family_figure,
    "lto_transfer": lto.transfer,
    "lto_trajectories": lto.trajectories,
    "lto_nets": nets.figure,
    "lto_vs_rules": lto_vs_rules.figure,
    "distill": distill.figure,
    "nos_table": nos.table,
    "nos_rosenbrock": nos.rosenbrock,
    "nos_search": nos.search,
    "nos_transfer": nos.larger_models,
    "nos_suite": nos_suite.search,
}
