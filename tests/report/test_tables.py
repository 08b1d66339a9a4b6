"""Report tables: how differences are printed."""

from __future__ import annotations

from foundry3d.report.tables import diff_text


def test_a_difference_whose_ci_excludes_zero_never_prints_as_zero():
    # token R² differences: 3 digits would print a real difference as +0.000 [+0.000, +0.001]
    assert diff_text(0.0004, 0.0002, 0.0007, 3) == "+0.0004 [+0.0002, +0.0007]"
    assert diff_text(-0.0004, -0.0007, -0.0002, 3) == "-0.0004 [-0.0007, -0.0002]"
    # a CI holding 0 keeps the task's digits: there is nothing to show
    assert diff_text(0.0004, -0.0002, 0.0007, 3) == "+0.000 [-0.000, +0.001]"
    # at most three more digits
    assert diff_text(1e-9, 1e-10, 1e-8, 3) == "+0.000000 [+0.000000, +0.000000]"
    # accuracy points at one digit stay as they were
    assert diff_text(1.04, 0.31, 1.83, 1) == "+1.0 [+0.3, +1.8]"
