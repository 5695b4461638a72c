"""Servers the restic tests share: restic's REST server for the rest: backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import restserver


@pytest.fixture(scope="session")
def rest_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[restserver.RestServer]:
    """restic-rest-server with basic auth, serving repositories for the whole session."""
    yield from restserver.serve(tmp_path_factory.mktemp("rest-server"))
