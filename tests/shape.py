"""The code-shape limits `make lint` holds quichsd/ to: no function longer than 60 lines and no
block ranked worse than C by radon's cyclomatic complexity (rank C ends at 20).

    python -m tests.shape [PATH...]      (default: quichsd)
Prints each offender on one line and exits 1 when there is any.
"""
from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

from radon.complexity import cc_rank, cc_visit

MAX_FUNCTION_LINES = 60
WORST_RANK = "C"


def python_files(paths: list[str]) -> Iterator[Path]:
    for path in map(Path, paths):
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def long_functions(source: str) -> Iterator[tuple[int, str, int]]:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                yield node.lineno, node.name, length


def complex_blocks(source: str) -> Iterator[tuple[int, str, int, str]]:
    for block in cc_visit(source):
        rank = cc_rank(block.complexity)
        if rank > WORST_RANK:
            yield block.lineno, block.fullname, block.complexity, rank


def offences(paths: list[str]) -> list[str]:
    found = []
    for path in python_files(paths):
        source = path.read_text()
        for line, name, length in long_functions(source):
            found.append(f"{path}:{line}: {name} is {length} lines (at most {MAX_FUNCTION_LINES})")
        for line, name, complexity, rank in complex_blocks(source):
            found.append(f"{path}:{line}: {name} has complexity {complexity}, radon rank {rank} "
                         f"(at most {WORST_RANK})")
    return found


def main(argv: list[str]) -> int:
    found = offences(argv or ["quichsd"])
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
