"""Shared fixture of the API server tests: one harness (scratch etcd, PKI, server thread) per module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.api.testing import ApiHarness


class NoStreams:
    """These modules never open pod streams; any call is a routing bug."""

    async def exec(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("unexpected pod stream")

    attach = log = portforward = exec


@pytest.fixture(scope="module")
def api() -> Iterator[ApiHarness]:
    harness = ApiHarness(NoStreams())
    try:
        yield harness
    finally:
        harness.close()
