"""One Prefect test harness (a temporary server and database) for the whole session.

Starting a server costs tens of seconds, so every flow test shares it; tests that do not run
the engine call the plain functions behind the tasks instead.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def prefect_harness():
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
