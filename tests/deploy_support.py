"""The production set-up of ``deploy/``, run as shipped: nginx with ``deploy/nginx/dashboard.conf`` terminating TLS
(a self-signed certificate made here) in front of two instances started by ``deploy/uvicorn/serve``, on PostgreSQL
and Redis, against the test emulator.

The shipped nginx file is used as it is, except for what any deployment replaces: the instances' addresses, the
listening addresses (free ports on 127.0.0.1), the certificate's paths, and ``client_header_timeout`` (shortened
so the slow-loris test does not wait 10 s; the directive is the shipped one). nginx runs as a child process
(``daemon off``) with its pid, logs and temporary files in the test's directory; a small main file around the
shipped one adds only those paths and an access log naming the instance that served each request.

Needs nginx (Debian's ``nginx``), TEST_REDIS_URL and TEST_POSTGRES_URL; skipped without them unless
REQUIRE_SERVICES=1 (then it fails).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import pwd
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from conftest import REPO
from instances_support import Instance, fresh_database, manage, service_unavailable, service_urls

from workqueue.emulator.control import EmulatorControl
from workqueue.emulator.launch import free_port

SHIPPED_NGINX = REPO / "deploy" / "nginx" / "dashboard.conf"
SERVE = REPO / "deploy" / "uvicorn" / "serve"
INTERVAL = 0.5
USERNAME = "platform-viewer"
ADMIN_USERNAME = "platform-admin"
PASSWORD = "correct horse battery staple"
# Short enough for a test, long enough for a TLS handshake on a busy machine.
TEST_HEADER_TIMEOUT = "2s"

CREATE_USERS = f"""
from django.contrib.auth.models import Group, User
from dashboard.permissions import ensure_roles
ensure_roles()
User.objects.create_user({USERNAME!r}, password={PASSWORD!r}).groups.add(Group.objects.get(name="viewer"))
User.objects.create_user({ADMIN_USERNAME!r}, password={PASSWORD!r}).groups.add(Group.objects.get(name="admin"))
"""


def nginx_binary() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if path is None:
        service_unavailable("nginx is not installed (apt-get install nginx): the deploy/ tests need it")
    assert path is not None
    return path


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "fullchain.pem", directory / "privkey.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _replace(text: str, pattern: str, replacement: str, count: int) -> str:
    new, made = re.subn(pattern, replacement, text, flags=re.M)
    assert made == count, f"deploy/nginx/dashboard.conf: expected {count} of {pattern!r}, found {made}"
    return new


def render_nginx(
    shipped: str, *, instance_ports: list[int], http_port: int, https_port: int, cert: Path, key: Path
) -> str:
    """The shipped file with this machine's addresses and paths (each replacement must match, so a change to the
    shipped file that this misses fails the test instead of testing something else)."""
    text = _replace(
        shipped, r"^(\s*)server 10\.0\.0\.11:8000 ", rf"\g<1>server 127.0.0.1:{instance_ports[0]} ", 1
    )
    extra = "".join(
        f"    server 127.0.0.1:{port} max_fails=2 fail_timeout=10s;\n" for port in instance_ports[2:]
    )
    text = _replace(
        text,
        r"^(\s*)server 10\.0\.0\.12:8000 (.*)\n",
        rf"\g<1>server 127.0.0.1:{instance_ports[1]} \2\n{extra}",
        1,
    )
    text = _replace(text, r"^(\s*)listen 80;$", rf"\g<1>listen 127.0.0.1:{http_port};", 1)
    text = _replace(
        text, r"^(\s*)listen 443 ssl http2;$", rf"\g<1>listen 127.0.0.1:{https_port} ssl http2;", 1
    )
    # No IPv6 listeners: the test machine may have no IPv6, and the IPv4 ones are the same servers.
    text = _replace(text, r"^\s*listen \[::\]:\d+.*\n", "", 2)
    text = _replace(
        text, r"^(\s*)ssl_certificate /etc/ssl/dashboard/fullchain\.pem;", rf"\g<1>ssl_certificate {cert};", 1
    )
    text = _replace(
        text,
        r"^(\s*)ssl_certificate_key /etc/ssl/dashboard/privkey\.pem;",
        rf"\g<1>ssl_certificate_key {key};",
        1,
    )
    return _replace(
        text, r"^(\s*)client_header_timeout 10s;$", rf"\g<1>client_header_timeout {TEST_HEADER_TIMEOUT};", 1
    )


def main_config(directory: Path, site: Path) -> str:
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes 1;
pid {directory / "nginx.pid"};
error_log {directory / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
    log_format served '$status $request_method $uri upstream=$upstream_addr';
    access_log {directory / "access.log"} served;
{temp}
    include {site};
}}
"""


@dataclass
class Nginx:
    binary: str
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def _args(self) -> list[str]:
        return [
            self.binary, "-p", str(self.directory), "-c", str(self.directory / "nginx.conf"),
            "-e", str(self.directory / "error.log"), "-g", "daemon off;",
        ]  # fmt: skip

    def start(self, https_port: int) -> Nginx:
        checked = subprocess.run([*self._args(), "-t"], capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr
        self.process = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.error_log()
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", https_port), timeout=0.5),
            ):
                return self
            time.sleep(0.05)
        raise AssertionError("nginx did not listen:\n" + self.error_log())

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def served_by(self) -> list[str]:
        """The instance address of each request in the access log, in order."""
        return re.findall(r"upstream=(\S+)", (self.directory / "access.log").read_text())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@dataclass
class Deployment:
    url: str  # https://127.0.0.1:<port>, through nginx
    http_url: str  # nginx's plain-HTTP port (redirects)
    https_port: int
    certificate: Path
    instances: list[Instance]
    nginx: Nginx
    upstream: EmulatorControl
    environment: dict[str, Any]
    environment_key: str
    redis_prefix: str
    database_url: str  # the instances' database (PostgreSQL), for what a test checks behind the pages
    settings: dict[str, str]  # the instances' environment, for manage.py commands

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certificate))

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.ssl_context(), timeout=10, **kwargs)

    @contextlib.contextmanager
    def sign_in(self, username: str = USERNAME) -> Iterator[httpx.Client]:
        """A client signed in through the login form, over TLS, through nginx (the viewer unless told)."""
        with self.client() as client:
            yield self._signed_in(client, username)

    def _signed_in(self, client: httpx.Client, username: str) -> httpx.Client:
        form = client.get("/accounts/login/")
        assert form.status_code == 200, form.text[:500]
        answer = client.post(
            "/accounts/login/",
            data={
                "username": username,
                "password": PASSWORD,
                "csrfmiddlewaretoken": client.cookies["csrftoken"],
            },
            # What a browser sends; Django's CSRF check compares it with the Host nginx passed on.
            headers={"Referer": f"{self.url}/accounts/login/"},
        )
        assert answer.status_code == 302 and answer.headers["location"] == "/", answer.text[:1000]
        return client


@contextlib.contextmanager
def deployment(emulator_base_url: str, emulator_api_key: str, directory: Path) -> Iterator[Deployment]:
    """nginx (as shipped) in front of two instances (as shipped) on PostgreSQL and Redis."""
    binary = nginx_binary()
    redis_url, postgres_url = service_urls()
    upstream = EmulatorControl(emulator_base_url, emulator_api_key)
    upstream.reset()
    environment, environment_key = upstream.create_environment("deployed")
    prefix = f"test-deploy-{secrets.token_hex(4)}"
    with fresh_database(redis_url, postgres_url, "deploy") as database_url:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SECRET_KEY": secrets.token_urlsafe(40),
            "ANTHROPIC_BASE_URL": emulator_base_url,
            "ANTHROPIC_API_KEY": emulator_api_key,
            "ENVIRONMENT_KEYS": f"{environment['id']}={environment_key}",
            "FEED_INTERVAL_SECONDS": str(INTERVAL),
            "FEED_DIRECTORY_INTERVAL_SECONDS": "1",
            "UPSTREAM_REQUESTS_PER_MINUTE": "100000",
            "LIVE_REDIS_PREFIX": prefix,
            "DASHBOARD_DATA_DIR": str(directory),
            "DEBUG": "0",
            # The production settings that go with TLS at nginx (README, "Deploying").
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_PROXY_SSL_HEADER": "1",
            "SECURE_SSL_REDIRECT": "1",
            "SESSION_COOKIE_SECURE": "1",
            "CSRF_COOKIE_SECURE": "1",
            "FORWARDED_ALLOW_IPS": "127.0.0.1",
            "PYTHON": sys.executable,
            "DASHBOARD_LOG_LEVEL": "warning",
        }
        env.pop("METRICS_TOKEN", None)
        manage(env, "migrate", "--noinput", "-v0")
        manage(env, "shell", "-c", CREATE_USERS)
        ports = [free_port(), free_port()]
        instances = [
            Instance(
                port, {**env, "DASHBOARD_PORT": str(port)}, directory / f"instance-{n}.log", [str(SERVE)]
            )
            for n, port in enumerate(ports)
        ]
        http_port, https_port = free_port(), free_port()
        cert, key = make_certificate(directory)
        site = directory / "dashboard.conf"
        site.write_text(
            render_nginx(
                SHIPPED_NGINX.read_text(),
                instance_ports=ports,
                http_port=http_port,
                https_port=https_port,
                cert=cert,
                key=key,
            )
        )
        (directory / "nginx.conf").write_text(main_config(directory, site))
        nginx = Nginx(binary, directory)
        try:
            for instance in instances:
                instance.start()
            nginx.start(https_port)
            yield Deployment(
                url=f"https://127.0.0.1:{https_port}",
                http_url=f"http://127.0.0.1:{http_port}",
                https_port=https_port,
                certificate=cert,
                instances=instances,
                nginx=nginx,
                upstream=upstream,
                environment=environment,
                environment_key=environment_key,
                redis_prefix=prefix,
                database_url=database_url,
                settings=env,
            )
        finally:
            nginx.stop()
            for instance in instances:
                instance.stop()
            _forget_redis_keys(redis_url, prefix)
            upstream.close()


def _forget_redis_keys(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()
