"""Helpers for ADIT's tests (no fixtures here: those are registered in conftest.py)."""

from .waiting import WaitTimeout, wait_until

__all__ = ["WaitTimeout", "wait_until"]
