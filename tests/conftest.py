"""Shared fixtures: certificates on disk, socket servers (tests/sockets.py)."""
pytest_plugins = ["tests.sockets"]
