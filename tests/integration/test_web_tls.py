"""The review site over TLS by its own certificate files ([web] tls_cert/tls_key): HTTPS
answers, the session cookie is Secure, HSTS is sent; and behind a reverse proxy ([web]
proxy) the client's address in the access entries is the one the proxy forwarded,
while the same header from anyone else is ignored."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
from pathlib import Path

import urllib3

from tests.conftest import run_cli
from tests.webfix import entries, free_port


def _station(tmp: Path, web: str) -> Path:
    run_cli("init", "--data", str(tmp / "st"), "--origin", "custody.test/web/dock-09")
    conf = tmp / "st" / "custody.toml"
    conf.write_text(conf.read_text() + "\n" + web)
    run_cli("user", "add", "li", "--role", "reviewer", config=conf, input="reviewer-pass-1\n")
    return conf


def _serve(conf: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "custody", "-c", str(conf), "web"],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),
    )


def _wait(http: urllib3.PoolManager, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if http.request("GET", url + "/healthz").status == 200:
                return
        except urllib3.exceptions.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"no answer from {url}: {log.read_text()}")


def _login(
    http: urllib3.PoolManager, base: str, password: str, forwarded: dict[str, str]
) -> urllib3.BaseHTTPResponse:
    return http.request(
        "POST",
        base + "/api/login",
        body=json.dumps({"username": "li", "password": password}),
        headers={"Content-Type": "application/json", **forwarded},
    )


def test_tls_by_certificate_files(tmp_path: Path) -> None:
    cert, key = tmp_path / "web.crt", tmp_path / "web.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    conf = _station(
        tmp_path,
        f'[web]\nlisten = "127.0.0.1:{port}"\ntls_cert = "{cert}"\ntls_key = "{key}"\n',
    )
    log = tmp_path / "web.log"
    proc = _serve(conf, port, log)
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        https = urllib3.PoolManager(ssl_context=ctx, retries=False, timeout=10)
        base = f"https://127.0.0.1:{port}"
        _wait(https, base, proc, log)
        r = https.request(
            "POST",
            base + "/api/login",
            body=json.dumps({"username": "li", "password": "reviewer-pass-1"}),
            headers={"Content-Type": "application/json"},
        )
        assert r.status == 200, r.data
        cookie = r.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert r.headers["strict-transport-security"].startswith("max-age=")
        # Plain HTTP on the TLS port gets no page.
        plain = urllib3.PoolManager(retries=False, timeout=5)
        try:
            got = plain.request("GET", f"http://127.0.0.1:{port}/healthz").status
        except urllib3.exceptions.HTTPError:
            got = None
        assert got != 200
        https.clear()  # TLS connections left open would hold the server's shutdown
    finally:
        proc.terminate()
        proc.wait(10)


def test_behind_a_proxy_the_forwarded_client_is_recorded(tmp_path: Path) -> None:
    port = free_port()
    conf = _station(tmp_path, f'[web]\nlisten = "127.0.0.1:{port}"\nproxy = "127.0.0.1"\n')
    log = tmp_path / "web.log"
    proc = _serve(conf, port, log)
    try:
        http = urllib3.PoolManager(retries=False, timeout=10)
        base = f"http://127.0.0.1:{port}"
        _wait(http, base, proc, log)
        https_from = {"X-Forwarded-Proto": "https"}
        r = _login(http, base, "wrong-password-1", {"X-Forwarded-For": "203.0.113.7", **https_from})
        assert r.status == 401
        r = _login(http, base, "reviewer-pass-1", {"X-Forwarded-For": "203.0.113.8", **https_from})
        assert r.status == 200
        assert "secure" in r.headers["set-cookie"].lower()  # the proxy speaks TLS to browsers
    finally:
        proc.terminate()
        proc.wait(10)
    failed = [e for e in entries(conf) if e["action"] == "login_failed"]
    assert [(e["user"], e["client"]) for e in failed] == [("li", "203.0.113.7")]


def test_without_a_proxy_forwarded_headers_are_ignored(tmp_path: Path) -> None:
    port = free_port()
    conf = _station(tmp_path, f'[web]\nlisten = "127.0.0.1:{port}"\n')
    log = tmp_path / "web.log"
    proc = _serve(conf, port, log)
    try:
        http = urllib3.PoolManager(retries=False, timeout=10)
        base = f"http://127.0.0.1:{port}"
        _wait(http, base, proc, log)
        r = _login(http, base, "wrong-password-1", {"X-Forwarded-For": "203.0.113.7"})
        assert r.status == 401
    finally:
        proc.terminate()
        proc.wait(10)
    failed = [e for e in entries(conf) if e["action"] == "login_failed"]
    assert [e["client"] for e in failed] == ["127.0.0.1"]
