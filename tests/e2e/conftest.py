from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.http import Http
from tests.support.mesh import Launcher


@pytest.fixture(scope="session")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """One mesh started by the Quickstart's launcher, shared by the e2e tests."""
    mesh = Launcher(tmp_path_factory.mktemp("mesh"))
    mesh.start()
    yield mesh
    if mesh.process and mesh.process.poll() is None:
        mesh.interrupt()


@pytest.fixture(scope="module")
def api(launcher: Launcher) -> Http:
    """JSON to and from the shared mesh's gateway."""
    return Http(launcher.address("gateway"))
