"""The shape check make lint runs (tests/shape.py) finds what it is meant to find."""
from tests.shape import complex_blocks, long_functions


def test_a_function_of_61_lines_is_too_long_and_60_is_not() -> None:
    body = "    x = 0\n" * 58
    ok = "def ok():\n" + body + "    return x\n"          # 60 lines
    long = "def long():\n" + body + "    x += 1\n    return x\n"  # 61 lines
    assert list(long_functions(ok)) == []
    assert list(long_functions(long)) == [(1, "long", 61)]


def test_rank_d_complexity_is_found_and_rank_c_is_not() -> None:
    def branches(n: int) -> str:
        return "def f(x):\n" + "".join(f"    if x == {i}:\n        return {i}\n" for i in range(n))

    assert list(complex_blocks(branches(19))) == []           # complexity 20: rank C
    assert [(name, cc, rank) for _, name, cc, rank in complex_blocks(branches(20))] == [("f", 21, "D")]
