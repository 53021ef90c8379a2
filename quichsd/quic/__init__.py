"""QUIC pieces shared by the kernel and simulation backends: varints, transport
parameters, versions, packet protection, error codes."""
