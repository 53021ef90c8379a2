"""Shared fixtures: certificates on disk, socket servers (tests/sockets.py)."""
import signal

pytest_plugins = ["tests.sockets"]


def _terminated(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    """A run stopped with SIGTERM (`timeout` around pytest) ends as after Ctrl-C: fixtures
    are torn down, so the servers tests started (tests/processes.py) are stopped too."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminated)


def pytest_collection_modifyitems(config, items):
    """`slow` tests run only when -m names them (make test runs them in a second pass)."""
    if "slow" in (config.option.markexpr or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
