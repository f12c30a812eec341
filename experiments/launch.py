r"""Runs a binary that takes `lopt.distributed`'s flags (`experiments.search_rules`,
`experiments.train_gps`) as several processes of one run on this machine.

    python -m experiments.launch --processes=2 -- experiments.search_rules --config=cpu \
        --out=runs/search2

starts `python -m MODULE ARGS --coordinator_address=localhost:PORT --num_processes=N
--process_id=K` for K = 0..N-1 on a free port, each pinned to its own share of the cores
(`--pin`, the default: unpinned, every process starts a thread pool as large as the machine
and they contend; measured in docs/decisions.md, "Several processes"). Process 0
writes to this terminal; the others write to `process_K.log` in `--logs` (a fresh temporary
directory by default). The launcher waits for all of them and exits with the first non-zero
exit status, naming each process that failed and its log. Interrupting it (Ctrl-C) stops
every process; starting it again with `--resume` in ARGS continues the run. On several
hosts, run the binary itself once per host (README, "Several machines").
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
from functools import partial

from absl import app, flags

from experiments import common

_PROCESSES = flags.DEFINE_integer("processes", 2, "How many processes to start.")
_PIN = flags.DEFINE_boolean(
    "pin", True, "Give each process its own share of this machine's cores (otherwise every "
    "process starts a thread pool as large as the machine, and they contend).")
_LOGS = flags.DEFINE_string("logs", None, "Directory for the logs of processes 1..N-1 "
                            "(default: a new temporary directory).")

JOINING_FLAGS = ("--coordinator_address", "--num_processes", "--process_id")


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def cores(index: int, num_processes: int) -> list[int]:
    """The cores process `index` of `num_processes` gets with --pin: an equal, contiguous share
    of the cores this process may use (shares overlap where processes outnumber cores)."""
    available = sorted(os.sched_getaffinity(0))
    if num_processes >= len(available):
        return [available[index % len(available)]]
    share = len(available) // num_processes
    return available[index * share:(index + 1) * share]


def commands(module: str, args: list[str], num_processes: int, port: int) -> list[list[str]]:
    """The command line of each process."""
    return [[sys.executable, "-m", module, *args, f"--coordinator_address=localhost:{port}",
             f"--num_processes={num_processes}", f"--process_id={index}"]
            for index in range(num_processes)]


def main(argv):
    if len(argv) < 2:
        raise app.UsageError("name the binary to run after --, e.g. "
                             "-- experiments.search_rules --config=cpu --out=runs/search2")
    module, args = argv[1], argv[2:]
    if _PROCESSES.value < 1:
        raise app.UsageError(f"--processes must be at least 1, got {_PROCESSES.value}")
    joined = [arg for arg in args if arg.split("=")[0] in JOINING_FLAGS]
    if joined:
        raise app.UsageError(f"the launcher sets {', '.join(JOINING_FLAGS)}; remove {joined}")
    logs = _LOGS.value or tempfile.mkdtemp(prefix="lopt_launch_")
    os.makedirs(logs, exist_ok=True)
    log_paths = [None] + [os.path.join(logs, f"process_{index}.log")
                          for index in range(1, _PROCESSES.value)]
    processes = []
    for command, log_path in zip(commands(module, args, _PROCESSES.value, free_port()),
                                 log_paths, strict=True):
        log = open(log_path, "w") if log_path else None  # noqa: SIM115 (closed below)
        pin = (partial(os.sched_setaffinity, 0, cores(len(processes), _PROCESSES.value))
               if _PIN.value else None)
        processes.append((subprocess.Popen(command, stdout=log, stderr=log, preexec_fn=pin),
                          log))
    try:
        codes = [process.wait() for process, _ in processes]
    except KeyboardInterrupt:
        for process, _ in processes:
            process.send_signal(signal.SIGINT)
        codes = [process.wait() for process, _ in processes]
    for _, log in processes:
        if log:
            log.close()
    failed = [(index, code) for index, code in enumerate(codes) if code]
    for index, code in failed:
        where = f"; its log: {log_paths[index]}" if log_paths[index] else ""
        sys.stderr.write(f"launch: process {index} of {module} exited with status {code}"
                         f"{where}\n")
    if failed:
        code = failed[0][1]
        sys.exit(code if code > 0 else 1)  # a negative code: killed by that signal


if __name__ == "__main__":
    common.run(main)
