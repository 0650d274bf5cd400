"""Core tests: the bad-input harness reports its count of cases at the end of the session."""

from __future__ import annotations

BAD_INPUTS_TEST = "test_bad_inputs.py::test_bad_input_is_refused_naming_the_problem"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    reports = [
        report
        for key in ("passed", "failed", "xfailed", "xpassed", "skipped")
        for report in terminalreporter.stats.get(key, [])
        if BAD_INPUTS_TEST in getattr(report, "nodeid", "")
        and getattr(report, "when", "call") in ("call", "setup")
        and not (report.when == "setup" and report.passed)
    ]
    if not reports:
        return
    from .bad_inputs import CORPUS
    from .test_bad_inputs import CASES, ENTRY_POINTS

    outcomes: dict[str, int] = {}
    for report in reports:
        outcomes[report.outcome] = outcomes.get(report.outcome, 0) + 1
    terminalreporter.write_sep(
        "=",
        f"bad-input corpus: {len(CORPUS)} items x {len(ENTRY_POINTS)} entry points "
        f"= {len(CASES)} applicable cases; run {len(reports)}: "
        + ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items())),
    )
