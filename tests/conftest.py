"""Shared fixtures: certificates on disk, socket servers (tests/sockets.py)."""
pytest_plugins = ["tests.sockets"]


def pytest_collection_modifyitems(config, items):
    """`slow` tests run only when -m names them (make test runs them in a second pass)."""
    if "slow" in (config.option.markexpr or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
