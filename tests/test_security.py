"""Deployment security checks that need no services (SECURITY.md): the metrics endpoint binds
loopback unless told otherwise, and the repository holds no secret (no private key, no password
file, no password in a config)."""
from __future__ import annotations

import re
import socket
import subprocess
import urllib.request
from pathlib import Path

from streams.live.command import config_from_environment
from streams.live.config import LiveConfig

REPO = Path(__file__).resolve().parents[1]


def test_the_metrics_endpoint_binds_loopback_by_default():
    assert LiveConfig().metrics_addr == "127.0.0.1"
    assert config_from_environment([]).metrics_addr == "127.0.0.1"
    assert config_from_environment(["--metrics-addr", "0.0.0.0"]).metrics_addr == "0.0.0.0"


def test_the_metrics_server_listens_where_it_is_told_and_nowhere_else():
    from streams.live.metrics import Metrics
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m = Metrics.create(topics={"authorisations": "a", "settlements": "s"}, reconcilers=list,
                       worker="test")
    server, thread = m.serve(port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            body = r.read().decode()
        assert "settlewatch_worker_up" in body
        listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
        local = {line.split()[1] for line in listening if line.split()[3] == "0A"}
        assert f"0100007F:{port:04X}" in local  # 127.0.0.1, LISTEN
        assert f"00000000:{port:04X}" not in local  # not 0.0.0.0
    finally:
        server.shutdown()
        server.server_close()


# A PEM private key, a password assignment with a literal value, or an AWS-style key id.
_SECRET = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----|AKIA[0-9A-Z]{16}|"
                     rb"(?i:(password|passwd|secret)\s*[:=]\s*['\"][^'\"${}<>]{6,}['\"])")


def test_the_repository_holds_no_private_key_and_no_password():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.split(b"\0")
    hits = []
    for name in filter(None, files):
        path = REPO / name.decode()
        if not path.is_file() or name.startswith(b"tests/"):
            continue  # tests make their own throw-away secrets at run time
        m = _SECRET.search(path.read_bytes())
        if m:
            hits.append(f"{name.decode()}: {m.group(0)[:40]!r}")
    assert hits == []
    names = [n.decode() for n in files if n]
    assert not [n for n in names if re.search(r"(\.key|\.p12|\.jks|password[^/]*)$", n)]
