"""Shared test helpers."""

import contextlib
import io
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from lopt import data
from lopt.rules.tokens import TOKENS_PER_LEVEL

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# For end-to-end runs of binaries and notebooks in fresh processes, whose time is mostly XLA
# compiling: XLA's and LLVM's optimisation passes off (`jax_disable_most_optimizations`) cut
# the smoke reproduction's compile time by about 30% (193 -> 137 s). These tests check what the
# programs produce and that they run, never a number compared with an optimised build.
FAST_COMPILE = {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}


@pytest.fixture(scope="session")
def run_module():
    """Runs `python -m MODULE ARGS...` from the repository root (compiling with `FAST_COMPILE`);
    returns CompletedProcess."""

    def run(module, *args, timeout=600):
        env = dict(os.environ, PYTHONPATH=REPO_ROOT, JAX_PLATFORMS="cpu", **FAST_COMPILE)
        return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)

    return run


def run_on_devices(script, num_devices):
    """Runs Python `script` in a fresh process with `num_devices` CPU devices and returns the
    JSON object its last line of output holds."""
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}")
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_in_this_process(script):
    """Runs Python `script` here (one device, sharing this process's compilations) and returns
    the JSON object its last line of output holds: the reference for `run_on_devices`."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(script, {"__name__": "script"})
    return json.loads(output.getvalue().strip().splitlines()[-1])


def write_cifar_batch(path, images_nhwc, labels):
    """Writes one file of the `cifar-10-batches-py` format: images uint8 [N, 32, 32, 3]."""
    flat = images_nhwc.transpose(0, 3, 1, 2).reshape(len(labels), 3072)
    with open(path, "wb") as file:
        pickle.dump({b"data": flat, b"labels": list(labels), b"batch_label": b"x"}, file)


@pytest.fixture
def cifar_dir(tmp_path):
    """A directory holding cifar-10-batches-py/ with four random images per file."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in (*data.CIFAR10_TRAIN_FILES, data.CIFAR10_TEST_FILE):
        images = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
        write_cifar_batch(folder / name, images, rng.integers(0, 10, size=4))
    return tmp_path


def token_violations(tokens, vocabulary, depth):
    """Constraint violations of one sequence, checked directly (not with the masks)."""
    sizes = vocabulary.sizes(depth)
    problems = [p for p, (t, size) in enumerate(zip(tokens, sizes, strict=True))
                if not 0 <= t < size]
    num_operands = len(vocabulary.operands)
    for level in range(depth):
        op1, op2, _, _, binary = tokens[TOKENS_PER_LEVEL * level:][:TOKENS_PER_LEVEL]
        previous = num_operands + level - 1
        if vocabulary.distinct_operands and op1 == op2:
            problems.append(f"level {level}: equal operands")
        if vocabulary.reuse_previous and level > 0 and previous not in (op1, op2):
            problems.append(f"level {level}: previous output unused")
        if (vocabulary.no_final_addition and level == depth - 1
                and vocabulary.binaries[binary] == "+"):
            problems.append("final addition")
    return problems
