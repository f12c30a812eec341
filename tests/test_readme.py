"""The README's set-up promises: CI runs exactly its test command; its binaries exist."""

import os
import re

from conftest import REPO_ROOT


def _read(*parts):
    with open(os.path.join(REPO_ROOT, *parts), encoding="utf-8") as file:
        return file.read()


def _readme_commands():
    return re.findall(r"```bash\n(.*?)\n```", _read("README.md"), re.S)


def test_ci_runs_exactly_the_readme_test_command():
    commands = _readme_commands()
    test_command = next(c for c in commands if "pytest" in c)
    ci_lines = [line for line in _read(".ci", "run").splitlines() if line and line[0] != "#"]
    assert test_command in ci_lines


def test_readme_main_job_names_an_existing_binary():
    main_job = _readme_commands()[0]
    module = re.search(r"-m (experiments\.\w+)", main_job).group(1)
    assert os.path.exists(os.path.join(REPO_ROOT, *module.split(".")) + ".py")


def test_readme_results_blocks_name_experiments_and_link_existing_figures():
    from experiments.reproduction import EXPERIMENTS

    readme = _read("README.md")
    blocks = re.findall(r"<!-- reproduce:(\w+) -->(.*?)<!-- /reproduce:(\w+) -->", readme, re.S)
    assert {name for name, _, _ in blocks} == set(EXPERIMENTS)
    for name, body, closing in blocks:
        assert name == closing
        for figure in re.findall(r"\]\((docs/figures/[^)]+)\)", body):
            assert os.path.exists(os.path.join(REPO_ROOT, figure)), figure
