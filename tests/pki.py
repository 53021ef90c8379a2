"""Test PKI: the package's throw-away certificate maker, under the names tests use."""
from quichsd.devcerts import NOW, Ca, demo_ca, leaf, make_ca, new_key

test_ca = demo_ca
test_ca.__test__ = False  # type: ignore[attr-defined]  # imported into test modules; not a test

__all__ = ["NOW", "Ca", "leaf", "make_ca", "new_key", "test_ca"]
