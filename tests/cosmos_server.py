"""The Cosmos DB for NoSQL server the tests run: npm `@vercel/cosmosdb-server` on loopback.

A third-party implementation of the Cosmos DB REST protocol that the real `azure-cosmos` SDK talks
to over HTTPS (self-signed certificate). It supports databases, containers, item CRUD and SQL
queries; it has no transactional batch and does not enforce the 2 MB item limit or throttle, so
those stay with the strict double in tests/test_cosmos_adapter.py. `make test` installs it
(`make servers`: npm ci in testing/servers).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.npm_servers import npm_server

#: The server accepts any well-formed master key; this is the public emulator key.
KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="


@pytest.fixture(scope="session")
def cosmos_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`https://127.0.0.1:<port>` of a running server, stopped after the session."""
    argv = lambda port: ["--host", "127.0.0.1", "--port", str(port)]  # noqa: E731
    with npm_server("cosmosdb-server", argv, tmp_path_factory.mktemp("cosmos")) as port:
        yield f"https://127.0.0.1:{port}"
