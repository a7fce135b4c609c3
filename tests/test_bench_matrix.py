"""The bench matrix's merge of a later run's cells into an earlier matrix
file (`make bench-matrix INTO=... NOTE=...`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
from matrix import merged_matrix


def matrix_run(host: str, cells: list[tuple[str, float]], *, greedy: list[str]) -> dict:
    return {
        "date": "2026-12-07",
        "host": host,
        "copy_bandwidth_gib_s": 20.0,
        "greedy_agreement": greedy,
        "cells": [{"cell": name, "decode": decode} for name, decode in cells],
    }


def test_a_later_run_replaces_its_cells_and_says_why() -> None:
    earlier = matrix_run("vm", [("a:Q4_0", 1.0), ("b:Q8_0", 2.0)], greedy=["old"])
    later = matrix_run("vm", [("b:Q8_0", 3.0), ("c:Q6_K", 4.0)], greedy=[])
    merged = merged_matrix(earlier, later, "after the fix")
    assert [(cell["cell"], cell["decode"], cell.get("remeasured")) for cell in merged["cells"]] == [
        ("a:Q4_0", 1.0, None),
        ("b:Q8_0", 3.0, "after the fix"),
        ("c:Q6_K", 4.0, "after the fix"),
    ]
    assert merged["greedy_agreement"] == ["old"]
    assert merged["remeasured"][-1]["cells"] == ["b:Q8_0", "c:Q6_K"]
    assert merged_matrix(merged, matrix_run("vm", [], greedy=["new"]), "again")["greedy_agreement"] == ["new"]
    assert earlier["cells"][1]["decode"] == 2.0


def test_cells_of_another_host_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot join a matrix of vm"):
        merged_matrix(matrix_run("vm", [], greedy=[]), matrix_run("laptop", [], greedy=[]), "x")
