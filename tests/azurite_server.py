"""The Azure Storage server the tests run: npm `azurite` (Microsoft's emulator), blob service only,
on loopback with in-memory persistence. `make test` installs it (`make servers`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.npm_servers import npm_server

#: Azurite's documented development account (public, not a secret).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture(scope="session")
def azurite_connection_string(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Connection string of a running azurite blob service, stopped after the session."""

    def argv(port: int) -> list[str]:
        return [
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--loose",
        ]

    with npm_server("azurite-blob", argv, tmp_path_factory.mktemp("azurite")) as port:
        yield (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
        )
