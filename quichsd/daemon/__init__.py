"""The tlshd-compatible daemon: one file per job (config, netlink, keyring, ...)."""
