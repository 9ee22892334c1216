"""deploy/nginx.conf for real: nginx terminates TLS in front of the real API, and the `__Host-`
session cookie, the origin check and the client address all work behind it.

`make test` installs nginx (Debian's `nginx-light`) when it is missing; run by hand without it,
these tests are skipped, saying so.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.api.identity.sessions import SESSION_COOKIE
from blocks.infra.crypto.passwords import hash_password
from blocks.infra.embedded.postgres import PostgresCredentials
from tests.support import Stack, free_port, run_sql, running_stack

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
pytestmark = pytest.mark.skipif(
    NGINX is None,
    reason="nginx is not installed (Debian: apt-get install nginx-light; `make test` does it)",
)
# The client comes from another loopback address than nginx's own (127.0.0.1), so the address
# the API records tells the forwarded one from the proxy's.
CLIENT_ADDRESS = "127.0.0.2"
SPOOFED = "203.0.113.7"
PASSWORD = "correct horse battery staple violet quarry"


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Proxy:
    https_url: str
    http_url: str
    tls: Tls


def _self_signed(folder: Path) -> Tls:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "blocks proxy test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    tls = Tls(folder / "fullchain.pem", folder / "privkey.pem")
    tls.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tls


def nginx_config(folder: Path, *, api_port: int, https_port: int, http_port: int, tls: Tls) -> Path:
    """The committed config with only what differs on this machine replaced: the API's address
    (compose's `api:8000`), loopback ports, the certificate's path, and temp paths of its own."""
    text = CONF.read_text()
    replacements = {
        "server api:8000;": f"server 127.0.0.1:{api_port};",
        "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
        "listen [::]:443 ssl;": "",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen [::]:80;": "",
        "/etc/nginx/tls/fullchain.pem": str(tls.cert),
        "/etc/nginx/tls/privkey.pem": str(tls.key),
        "access_log /dev/stdout;": f"access_log {folder}/access.log;",
        "http {": "http {\n"
        + "".join(
            f"    {kind}_temp_path {folder}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        ),
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"deploy/nginx.conf no longer has exactly one {old!r}"
        text = text.replace(old, new)
    path = folder / "nginx.conf"
    path.write_text(text)
    return path


def _nginx(folder: Path, conf: Path, *args: str) -> list[str]:
    assert NGINX is not None
    return [
        NGINX, "-p", f"{folder}/", "-c", str(conf), "-e", str(folder / "error.log"),
        "-g", f"pid {folder}/nginx.pid;", *args,
    ]  # fmt: skip


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_the_committed_config_parses(tmp_path: Path) -> None:
    conf = nginx_config(
        tmp_path, api_port=free_port(), https_port=free_port(), http_port=free_port(),
        tls=_self_signed(tmp_path),
    )  # fmt: skip
    checked = subprocess.run(_nginx(tmp_path, conf, "-t"), capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr


@pytest.fixture(scope="module")
def _ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture(scope="module")
async def api_behind_proxy(
    engine: AsyncEngine,
    temporal_env: WorkflowEnvironment,
    postgres: PostgresCredentials,
    _ports: tuple[int, int],
) -> AsyncIterator[Stack]:
    https_port, _ = _ports
    async with running_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        task_queue=f"blocks-proxy-{uuid.uuid4().hex[:8]}",
        with_worker=False,
        extra_settings={
            # What compose sets: the proxy's https address, and the proxy as the one trusted.
            "public_url": f"https://127.0.0.1:{https_port}",
            "trusted_proxies": ["127.0.0.1"],
        },
    ) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(
    api_behind_proxy: Stack, _ports: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxy]:
    folder = tmp_path_factory.mktemp("nginx")
    https_port, http_port = _ports
    tls = _self_signed(folder)
    api_port = int(api_behind_proxy.base_url.rsplit(":", 1)[1])
    conf = nginx_config(
        folder, api_port=api_port, https_port=https_port, http_port=http_port, tls=tls
    )
    process = subprocess.Popen(
        _nginx(folder, conf, "-g", "daemon off;"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not _listening(https_port) and process.poll() is None:
            assert time.monotonic() < deadline, "nginx does not listen"
            time.sleep(0.05)
        assert process.poll() is None, (folder / "error.log").read_text()
        assert _listening(https_port), "nginx does not listen"
        yield Proxy(f"https://127.0.0.1:{https_port}", f"http://127.0.0.1:{http_port}", tls)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _client(proxy: Proxy) -> httpx.AsyncClient:
    """A browser-like client over TLS from CLIENT_ADDRESS, trusting the test certificate."""
    context = ssl.create_default_context(cafile=str(proxy.tls.cert))
    transport = httpx.AsyncHTTPTransport(local_address=CLIENT_ADDRESS, verify=context)
    return httpx.AsyncClient(base_url=proxy.https_url, transport=transport, timeout=30)


async def _password_user(engine: AsyncEngine) -> tuple[uuid.UUID, str]:
    user_id, email = uuid.uuid4(), f"proxy-{uuid.uuid4().hex[:8]}@example.com"
    await run_sql(
        engine,
        "INSERT INTO users (id, email, display_name, created_at, email_verified_at, password_hash)"
        " VALUES (:id, :email, 'Robin', now(), now(), :hash)",
        id=user_id,
        email=email,
        hash=hash_password(PASSWORD),
    )
    return user_id, email


async def test_plain_http_is_redirected_to_https(proxy: Proxy) -> None:
    async with httpx.AsyncClient() as plain:
        answer = await plain.get(f"{proxy.http_url}/v1/auth/me?x=1")
    assert answer.status_code == 308
    assert answer.headers["location"] == "https://127.0.0.1/v1/auth/me?x=1"


async def test_sign_in_cookie_origin_check_and_client_address_behind_the_proxy(
    proxy: Proxy, api_behind_proxy: Stack, engine: AsyncEngine, postgres: PostgresCredentials
) -> None:
    user_id, email = await _password_user(engine)
    origin = {"Origin": api_behind_proxy.settings.public_url}
    async with _client(proxy) as browser:
        signed_in = await browser.post(
            "/v1/auth/signin",
            json={"email": email, "password": PASSWORD},
            # A client naming another address: nginx replaces it with the one it saw.
            headers={**origin, "X-Forwarded-For": SPOOFED},
        )
        assert signed_in.status_code == 200, signed_in.text
        cookie = signed_in.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=")
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        # What a browser requires to keep a `__Host-` cookie: Secure, Path=/, no Domain.
        assert {"secure", "httponly", "path"} <= attributes
        assert "domain" not in attributes
        assert "path=/" in cookie.lower().replace(" ", "")
        assert "strict-transport-security" in signed_in.headers

        # The cookie travels back over TLS (the client keeps it as a browser would), and a
        # state-changing request from this site's origin passes the origin check.
        assert browser.cookies.get(SESSION_COOKIE)
        same_site = await browser.post("/v1/auth/switch-org", headers=origin)
        assert same_site.status_code == 200, same_site.text
        cross_site = await browser.post(
            "/v1/auth/switch-org", headers={"Origin": "https://evil.example"}
        )
        assert cross_site.status_code == 403
        assert cross_site.json()["code"] == "csrf"

    with psycopg.connect(postgres.url(superuser=True)) as conn:
        addresses = {
            row[0]
            for row in conn.execute(
                "SELECT ip FROM user_sessions WHERE user_id = %s", (user_id,)
            ).fetchall()
        }
    # The client's own address: forwarded by nginx, believed because nginx is trusted; neither
    # the proxy's address (127.0.0.1) nor the one the client made up.
    assert addresses == {CLIENT_ADDRESS}


async def test_forwarded_headers_from_anyone_but_the_proxy_are_ignored(
    api_behind_proxy: Stack, engine: AsyncEngine, postgres: PostgresCredentials
) -> None:
    user_id, email = await _password_user(engine)
    transport = httpx.AsyncHTTPTransport(local_address=CLIENT_ADDRESS)
    async with httpx.AsyncClient(base_url=api_behind_proxy.base_url, transport=transport) as c:
        direct = await c.post(
            "/v1/auth/signin",
            json={"email": email, "password": PASSWORD},
            headers={
                "Origin": api_behind_proxy.settings.public_url,
                "X-Forwarded-For": SPOOFED,
                "X-Forwarded-Proto": "https",
            },
        )
    assert direct.status_code == 200, direct.text
    with psycopg.connect(postgres.url(superuser=True)) as conn:
        row = conn.execute("SELECT ip FROM user_sessions WHERE user_id = %s", (user_id,)).fetchone()
    assert row == (CLIENT_ADDRESS,)
