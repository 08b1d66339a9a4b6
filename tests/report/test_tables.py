"""Report tables: how differences are printed."""

from __future__ import annotations

from foundry3d.eval.results import format_signed


def test_a_difference_whose_ci_excludes_zero_never_prints_as_zero():
    # token R² differences (fidelity: 3 digits) would print a real difference as +0.000 [+0.000, +0.001]
    assert format_signed("fidelity", [0.0004, 0.0002, 0.0007]) == "+0.0004 [+0.0002, +0.0007]"
    assert format_signed("fidelity", [-0.0004, -0.0007, -0.0002]) == "-0.0004 [-0.0007, -0.0002]"
    # a CI holding 0 keeps the task's digits: there is nothing to show
    assert format_signed("fidelity", [0.0004, -0.0002, 0.0007]) == "+0.000 [-0.000, +0.001]"
    # at most three more digits
    assert format_signed("fidelity", [1e-9, 1e-10, 1e-8]) == "+0.000000 [+0.000000, +0.000000]"
    # accuracy points at one digit stay as they were
    assert format_signed("svm", [0.0104, 0.0031, 0.0183]) == "+1.0 [+0.3, +1.8]"
