"""Run `python -m MODULE ARGS...` in a process that can start only THREADS more threads.

Tests run as root, and root ignores RLIMIT_NPROC, so the limit is made of address space:
every thread stack is STACK bytes (threading.stack_size) and RLIMIT_AS leaves room for
THREADS of them over what the process holds once quichsd is imported, plus some slack for
the heap (MALLOC_ARENA_MAX=1 in the environment keeps glibc from reserving an arena per
thread). The next pthread_create() then fails (EAGAIN), which Python raises as
`RuntimeError: can't start new thread`, just as under a process limit.

    python -m tests.sock.thread_limited THREADS MODULE ARGS...
"""
from __future__ import annotations

import resource
import runpy
import sys
import threading

STACK = 256 << 20
SLACK = 160 << 20


def address_space() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def main(argv: list[str]) -> None:
    threads, module, args = int(argv[0]), argv[1], argv[2:]
    if module == "-m":  # `thread_limited N -m MODULE ...`, as a launcher prefix writes it
        module, args = args[0], args[1:]
    import quichsd.cli  # noqa: F401  # what a handshake needs, loaded before the limit
    import quichsd.daemon.service  # noqa: F401
    import quichsd.echo  # noqa: F401
    import quichsd.sock.sim  # noqa: F401

    threading.stack_size(STACK)
    limit = address_space() + threads * STACK + SLACK
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
