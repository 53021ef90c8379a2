"""Target daemon_config: the daemon's configuration file, read as tlshd reads it (GLib
GKeyFile syntax, spec tlshd-behaviour §4), quichsd/daemon/config.py: KeyFile.parse, every
typed getter on every key, and from_keyfile's [quichsd], [debug], [authenticate*] and
[alpn:...] groups.

Input: the file's bytes.

A bug is any exception other than ConfigError (the one error the daemon turns into a
one-line message and a refusal to start or to reload); a getter that fails for a key the
parser stored without raising ConfigError.
"""
from __future__ import annotations

import contextlib
import logging

from quichsd.daemon.config import ConfigError, KeyFile, from_keyfile

# from_keyfile warns about unknown keys and unreadable [debug] values: not what is tested.
logging.getLogger("quichsd").setLevel(logging.CRITICAL)


def one_input(data: bytes) -> None:
    try:
        keyfile = KeyFile.parse(data, "fuzz.conf")
    except ConfigError:
        return
    for group in keyfile.groups():
        assert keyfile.has_group(group)
        for key in keyfile.keys(group):
            assert keyfile.raw(group, key) is not None
            getters = (keyfile.get_string, keyfile.get_string_list, keyfile.get_integer, keyfile.get_boolean)
            for getter in getters:
                with contextlib.suppress(ConfigError):
                    getter(group, key)
    with contextlib.suppress(ConfigError):
        from_keyfile(keyfile)
