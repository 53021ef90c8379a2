"""SSLKEYLOGFILE output (the NSS key log format Wireshark reads). Off unless asked for.

The engine only makes the lines (KeyLogLine events, with TlsConfig.keylog); the driver
(quichsd/handshake.py) writes them with KeyLogFile."""
from __future__ import annotations

import os
from typing import IO


class KeyLogFile:
    """Appends `LABEL <client_random hex> <secret hex>` lines; the file is created 0600."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file: IO[str] = os.fdopen(fd, "a", buffering=1)

    def log(self, label: str, client_random: bytes, secret: bytes) -> None:
        self._file.write(f"{label} {client_random.hex()} {secret.hex()}\n")

    def close(self) -> None:
        self._file.close()


# Labels of the NSS key log format for TLS 1.3.
CLIENT_EARLY = "CLIENT_EARLY_TRAFFIC_SECRET"
CLIENT_HANDSHAKE = "CLIENT_HANDSHAKE_TRAFFIC_SECRET"
SERVER_HANDSHAKE = "SERVER_HANDSHAKE_TRAFFIC_SECRET"
CLIENT_TRAFFIC_0 = "CLIENT_TRAFFIC_SECRET_0"
SERVER_TRAFFIC_0 = "SERVER_TRAFFIC_SECRET_0"
EXPORTER = "EXPORTER_SECRET"
