"""``arclip serve --tls``: a local CA and server certificate, and a server that speaks HTTPS with them."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509

from api.tls import ensure_certificate
from tests.processes import stop_process


def _sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))


def test_certificate_covers_local_and_lan_names_and_chains_to_the_ca(tmp_path: Path) -> None:
    made = ensure_certificate(tmp_path / "tls", ["192.168.1.20", "laptop.local", "0.0.0.0"])
    assert _sans(made.cert) == {"localhost", "127.0.0.1", "::1", "192.168.1.20", "laptop.local"}
    server = x509.load_pem_x509_certificate(made.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(made.ca.read_bytes())
    server.verify_directly_issued_by(ca)  # raises unless the CA signed it
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (made.key.stat().st_mode & 0o777) == 0o600
    assert ((tmp_path / "tls" / "ca-key.pem").stat().st_mode & 0o777) == 0o600


def test_certificate_is_kept_and_reissued_from_the_same_ca_on_a_new_network(tmp_path: Path) -> None:
    first = ensure_certificate(tmp_path, ["192.168.1.20"])
    cert_bytes, ca_bytes = first.cert.read_bytes(), first.ca.read_bytes()
    again = ensure_certificate(tmp_path, ["192.168.1.20"])
    assert again.cert.read_bytes() == cert_bytes  # nothing new while it covers the names
    moved = ensure_certificate(tmp_path, ["10.0.0.7"])
    assert moved.cert.read_bytes() != cert_bytes and "10.0.0.7" in _sans(moved.cert)
    assert moved.ca.read_bytes() == ca_bytes and moved.fingerprint == first.fingerprint  # a phone keeps trusting it


def test_a_damaged_key_file_gets_a_new_certificate(tmp_path: Path) -> None:
    first = ensure_certificate(tmp_path)
    first.key.write_text("not a key")
    again = ensure_certificate(tmp_path)
    server = x509.load_pem_x509_certificate(again.cert.read_bytes())
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(again.key.read_bytes(), password=None)
    assert key.public_key() == server.public_key()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, context: ssl.SSLContext) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        return response.status, response.read()


def test_serve_tls_answers_https_verified_against_its_own_ca(tmp_path: Path) -> None:
    exe = shutil.which("arclip")
    command = [exe] if exe else [sys.executable, "-c", "from api.cli import main; main()"]
    port = _free_port()
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCLIP_")}
    env.update(ARCLIP_DATA_DIR=str(data), ARCLIP_MODEL_PRECISION="fp32", ARCLIP_WORKERS="1", ARCLIP_MAX_BATCH_SIZE="1")
    log = (tmp_path / "serve.log").open("w+")
    server = subprocess.Popen(
        [*command, "serve", "--tls", "--host", "127.0.0.1", "--port", str(port)],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        ca = data / "tls" / "ca.pem"
        trusting = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            if ca.is_file():
                trusting = ssl.create_default_context(cafile=str(ca))  # verification on: hostname and chain
                try:
                    status, body = _get(f"https://127.0.0.1:{port}/healthz", trusting)
                    break
                except (urllib.error.URLError, ConnectionError, ssl.SSLError):
                    pass
            time.sleep(0.25)
        else:
            log.seek(0)
            pytest.fail(f"no HTTPS answer from arclip serve --tls:\n{log.read()[-3000:]}")
        assert status == 200, body
        assert trusting is not None
        assert trusting.verify_mode == ssl.CERT_REQUIRED and trusting.check_hostname
        # The name a browser on this machine uses is covered too.
        assert _get(f"https://localhost:{port}/healthz", trusting)[0] == 200
        # The CA a phone installs is handed out, and it is the one the server's certificate chains to.
        status, handed = _get(f"https://127.0.0.1:{port}/tls/ca.pem", trusting)
        assert status == 200 and handed == ca.read_bytes()
        # Without trusting our CA the certificate is refused: verification is real.
        with pytest.raises(urllib.error.URLError) as refused:
            _get(f"https://127.0.0.1:{port}/healthz", ssl.create_default_context())
        assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
        log.seek(0)
        said = log.read()
        assert f"https://127.0.0.1:{port}/canvas/" in said and "/tls/ca.pem" in said
    finally:
        stop_process(server, timeout=30)
        log.close()
