"""One lopt run on several processes (hosts), with JAX's multi-controller runtime.

Every process runs the same program with the same keys; `initialize` joins them (before any
JAX computation), after which `jax.devices()` lists the devices of all processes and
`lopt.parallel` and the search evaluator split their item axis (objectives, candidate rules ×
learning rates) over all of them. What a split computation returns is gathered onto every
process (`gather`), so everything after it — strategies, LQG bookkeeping, the S-step, logging
decisions — runs identically everywhere, on values identical to the last bit. Only process 0
(`is_writer`) writes files; what a resume reads comes from process 0 too (`from_writer`), so
the other hosts need no copy of the output directory.

    lopt.distributed.initialize("host0:9876", num_processes=2, process_id=0)  # on host 0
    lopt.distributed.initialize("host0:9876", num_processes=2, process_id=1)  # on host 1

With no arguments, `initialize` joins the processes of a cluster JAX detects (SLURM, Open MPI)
and otherwise does nothing: one process. On CPUs the collectives run over gloo (TCP).

A process that dies ends the run: the collectives of the others fail at once (or their
coordination service notices the missing heartbeats within `HEARTBEAT_TIMEOUT_S`), and
`exit_at_once_on_error` turns that into one line on standard error and exit status 1
instead of a traceback followed by a hang in JAX's shutdown barrier; a process that fails for
any other reason exits at once too, so that the others' next collective fails. Restarting
every process with the run's resume option continues from process 0's last checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator

import jax
import numpy as np

HEARTBEAT_TIMEOUT_S = 30
INITIALIZATION_TIMEOUT_S = 120
_CLUSTER_VARIABLES = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE")
# Words in the errors JAX raises when a peer process has gone (gloo's TCP pairs, the
# coordination service).
_PEER_FAILURE_WORDS = ("Gloo", "gloo", "coordination service", "heartbeat", "Connection closed",
                       "Connection reset", "DEADLINE_EXCEEDED", "UNAVAILABLE")


def _check_arguments(coordinator_address, num_processes, process_id) -> None:
    given = [value is not None for value in (coordinator_address, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError("several processes need all of coordinator_address, num_processes "
                         "and process_id (or none, inside a cluster JAX detects)")
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes must be at least 1, got {num_processes}")
    if process_id is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
    if coordinator_address is not None and ":" not in coordinator_address:
        raise ValueError(f"coordinator_address must be host:port, got {coordinator_address!r}")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Joins this process to a multi-process run (module docstring); call it before any JAX
    computation. All three arguments, or none (then a detected cluster, else one process).

    Raises:
      ValueError: some but not all arguments, a process id out of range, or an address
        without a port; checked before anything connects.
    """
    _check_arguments(coordinator_address, num_processes, process_id)
    in_cluster = any(variable in os.environ for variable in _CLUSTER_VARIABLES)
    if coordinator_address is None and not in_cluster:
        return
    if num_processes == 1:
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=INITIALIZATION_TIMEOUT_S,
                               heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)


def is_writer() -> bool:
    """Whether this process writes the run's files (process 0)."""
    return jax.process_index() == 0


def gather(tree):
    """`tree` with every array leaf as a NumPy array of its whole value, on every process
    (a collective for leaves split over several processes: every process must call it on
    the same tree)."""
    from jax.experimental import multihost_utils

    def whole(leaf):
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            return np.asarray(leaf)  # already whole here (process_allgather would stack it)
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree.map(whole, tree)


def _broadcast(payload: np.ndarray) -> np.ndarray:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.broadcast_one_to_all(payload))


def from_writer(read: Callable[[], bytes]) -> bytes:
    """`read()` on process 0, its bytes on every process; a ValueError it raises is raised on
    every process with the same message (so every process stops on a refused resume)."""
    if jax.process_count() == 1:
        return read()
    status, payload = 0, b""
    if is_writer():
        try:
            payload = read()
        except ValueError as error:
            status, payload = 1, str(error).encode()
    header = _broadcast(np.array([status, len(payload)], np.int64))
    buffer = np.zeros(int(header[1]), np.uint8)
    if is_writer():
        buffer[:] = np.frombuffer(payload, np.uint8)
    payload = _broadcast(buffer).tobytes()
    if header[0]:
        raise ValueError(payload.decode())
    return payload


def writer_file(path: str) -> bytes:
    """The bytes of process 0's file `path` (empty if it has none), on every process: what a
    resume reads, so other hosts need no copy of the output directory."""
    def read() -> bytes:
        if not os.path.exists(path):
            return b""
        with open(path, "rb") as file:
            return file.read()
    return from_writer(read)


def is_peer_failure(error: BaseException) -> bool:
    """Whether `error` says another process of the run has gone (only with several)."""
    return jax.process_count() > 1 and any(word in str(error) for word in _PEER_FAILURE_WORDS)


@contextlib.contextmanager
def exit_at_once_on_error(program: str) -> Iterator[None]:
    """Inside, with several processes: a peer process's death exits this one at once with one
    line naming it and status 1 (module docstring); any other error prints its traceback and
    exits at once too, so that the peers' collectives fail instead of waiting for this
    process in JAX's shutdown barrier. With one process errors pass through unchanged."""
    try:
        yield
    except Exception as error:
        if not jax.distributed.is_initialized() or jax.process_count() == 1:
            raise
        where = f"process {jax.process_index()} of {jax.process_count()}"
        if is_peer_failure(error):
            first_line = (str(error).strip().splitlines() or [""])[0]
            sys.stderr.write(f"{program}: error: {where}: another process of this run failed "
                             f"({type(error).__name__}: {first_line[:200]}); restart every "
                             "process with --resume\n")
        else:
            traceback.print_exc()
            sys.stderr.write(f"{program}: error: {where} failed (above); the others stop "
                             "when they next wait for it\n")
        sys.stderr.flush()
        os._exit(1)  # not sys.exit: JAX's shutdown barrier would wait for the other processes

