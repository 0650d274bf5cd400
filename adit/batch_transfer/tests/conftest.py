from adit.batch_query.tests.conftest import (  # noqa: F401 - fixtures shared by both batch apps
    destination_server,
    researcher,
    researchers,
    source_server,
)
