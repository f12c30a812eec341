"""Shared test helpers."""

import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def run_module():
    """Runs `python -m MODULE ARGS...` from the repository root; returns CompletedProcess."""

    def run(module, *args, timeout=600):
        env = dict(os.environ, PYTHONPATH=REPO_ROOT, JAX_PLATFORMS="cpu")
        return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)

    return run
