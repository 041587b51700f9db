"""The servers of the topology test, once for the module (tests/topology/servers.py starts them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.topology.servers import Topology, missing, running_topology


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, model_cache_dir: Path) -> Iterator[Topology]:
    reason = missing()
    if reason:
        pytest.skip(reason)
    with running_topology(tmp_path_factory.mktemp("topology"), model_cache_dir) as running:
        yield running
