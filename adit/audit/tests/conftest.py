from adit.selective_transfer.tests.conftest import (  # noqa: F401 - fixtures shared with it
    node_a,
    researcher,
    researchers,
)
