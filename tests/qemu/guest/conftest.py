"""Fixtures the guest test modules use by name (`pytestmark = usefixtures("quic_module")`)."""
from tests.qemu.guest import kernel

quic_module = kernel.quic_module
