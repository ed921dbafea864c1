"""`dupify serve --tls-cert --tls-key` (PRIVACY row 11): a real server process with a self-signed
certificate made here; a TLS 1.3 client is served, a TLS 1.2 client is refused."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support.servers import BIN, clean_env, start_server, stop_server


@dataclass
class TlsServer:
    port: int
    certificate: Path


def make_certificate(directory: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def client_context(certificate: Path, version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that trusts the test certificate and speaks exactly one protocol version."""
    context = ssl.create_default_context(cafile=str(certificate))
    context.minimum_version = version
    context.maximum_version = version
    return context


def handshake(port: int, context: ssl.SSLContext) -> str | None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.version()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    workdir = tmp_path_factory.mktemp("tls")
    cert, key = make_certificate(workdir)
    server = start_server(
        workdir,
        clean_env(),
        serve_args=["--tls-cert", str(cert), "--tls-key", str(key)],
        tls=client_context(cert, ssl.TLSVersion.TLSv1_3),
    )
    yield TlsServer(server.port, cert)
    stop_server(server)


def test_a_tls13_client_is_served(tls_server: TlsServer) -> None:
    context = client_context(tls_server.certificate, ssl.TLSVersion.TLSv1_3)
    assert handshake(tls_server.port, context) == "TLSv1.3"
    response = httpx.get(f"https://127.0.0.1:{tls_server.port}/v1/models", verify=context)
    # Served over TLS: the API answers (asking for a key), not a handshake failure.
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"


def test_a_tls12_client_is_refused(tls_server: TlsServer) -> None:
    context = client_context(tls_server.certificate, ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError):
        handshake(tls_server.port, context)
    # The same client allowed TLS 1.3 as well gets through: the refusal is about the version.
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    assert handshake(tls_server.port, context) == "TLSv1.3"


def test_plain_http_gets_no_answer(tls_server: TlsServer) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{tls_server.port}/healthz", timeout=5)


def test_a_certificate_without_its_key_is_refused() -> None:
    result = subprocess.run(
        [str(BIN / "dupify"), "serve", "--tls-cert", "cert.pem"],
        env=clean_env(),
        capture_output=True,
        text=True,
        cwd=os.getcwd(),
    )
    assert result.returncode == 2
    assert "--tls-cert and --tls-key go together" in result.stderr + result.stdout


def test_an_oversized_head_over_tls_gets_the_envelope(tls_server: TlsServer) -> None:
    context = client_context(tls_server.certificate, ssl.TLSVersion.TLSv1_3)
    response = httpx.get(
        f"https://127.0.0.1:{tls_server.port}/healthz",
        headers={"X-Big": "a" * 100_000},
        verify=context,
        timeout=30,
    )
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "request_header_fields_too_large"
