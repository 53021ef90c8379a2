"""TLS 1.3 over TCP with our engine, then kTLS (tlshd-behaviour.md §3.3): the record layer
(record.py), the handshake driver over a connected socket (handshake.py) and the kernel
install (ktls.py)."""
