"""Mail over STARTTLS with SMTP AUTH, the password read from a file: Alertmanager (Debian's, run
by deploy/local/monitoring.sh) against the SMTP sink with TLS required (streams/ops/smtpsink.py
`tls=`). The CA of the sink's certificate reaches Alertmanager the way Go programs take an
extra CA, SSL_CERT_FILE; for a real relay with a public certificate nothing is needed.

The password (made per run) is then looked for where it must not be: the rendered
alertmanager.yml, Prometheus' and Alertmanager's logs and config files, their command lines and
environments, and `ps` output."""
from __future__ import annotations

import secrets
import smtplib
import ssl
import subprocess
from pathlib import Path

import pytest

from streams.ops.smtpsink import SmtpSink, text_of

try:  # tests/integration is not a package: pytest puts it on sys.path
    from monitoring_helpers import MonitoringStack
    from test_security_kafka import make_certificates
except ModuleNotFoundError:  # it became one
    from tests.integration.monitoring_helpers import MonitoringStack
    from tests.integration.test_security_kafka import make_certificates

USER = "alertmanager"


@pytest.fixture(scope="module")
def tls_sink(tmp_path_factory):
    root = tmp_path_factory.mktemp("smtp-tls")
    certs = make_certificates(root / "certs")
    password = secrets.token_urlsafe(18)
    password_file = root / "smtp-password"
    password_file.write_text(password)  # no newline: Alertmanager sends the file as it is
    password_file.chmod(0o600)
    with SmtpSink(root / "mail", auth=(USER, password),
                  tls=(certs["broker.pem"], certs["broker.key"])) as sink:
        sink.password, sink.password_file, sink.certs = password, password_file, certs
        yield sink


def test_the_sink_requires_starttls_before_auth_and_mail(tls_sink):
    with smtplib.SMTP(tls_sink.host, tls_sink.port, timeout=30) as c:
        c.ehlo()
        assert c.has_extn("starttls")
        code, _ = c.mail("someone@test.example")
        assert code == 530  # Must issue a STARTTLS command first
    context = ssl.create_default_context(cafile=str(tls_sink.certs["ca.pem"]))
    with smtplib.SMTP(tls_sink.host, tls_sink.port, timeout=30) as c:
        c.starttls(context=context)
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login(USER, "wrong-password")
    with smtplib.SMTP(tls_sink.host, tls_sink.port, timeout=30) as c:
        c.starttls(context=context)
        c.login(USER, tls_sink.password)
        c.sendmail("a@test.example", ["b@test.example"],
                   b"Subject: starttls probe\r\n\r\nhello\r\n")
    tls_sink.wait_for(lambda m: m["Subject"] == "starttls probe", timeout=30)


def test_alertmanager_mails_over_starttls_and_the_password_leaks_nowhere(tls_sink,
                                                                        tmp_path):
    stack = MonitoringStack(tmp_path / "run", [], tls_sink, smtp_user=USER,
                            smtp_password_file=tls_sink.password_file,
                            env={"SW_SMTP_REQUIRE_TLS": "true",
                                 "SSL_CERT_FILE": str(tls_sink.certs["ca.pem"])})
    stack.up()
    try:
        sessions_before = tls_sink.tls_sessions
        stack.post_alerts([{
            "labels": {"alertname": "SettlewatchStarttlsProbe", "service": "settlewatch",
                       "severity": "warning", "category": "pipeline"},
            "annotations": {"summary": "probe over STARTTLS",
                            "description": "sent by test_security_smtp"}}])
        msg = tls_sink.wait_for(lambda m: "probe over STARTTLS" in m.get("Subject", ""),
                                timeout=180)
        assert "probe over STARTTLS" in text_of(msg)
        assert tls_sink.tls_sessions > sessions_before
        assert "PLAIN" in tls_sink.authenticator.logins
        pids = stack.pids()
        ps = subprocess.run(["ps", "axeww", "-o", "pid,args"], capture_output=True,
                            text=True, timeout=30).stdout
        proc = b"".join(Path(f"/proc/{pid}/{what}").read_bytes()
                        for pid in pids for what in ("cmdline", "environ"))
    finally:
        stack.down()
    secret = tls_sink.password
    assert secret not in ps and secret.encode() not in proc
    leaks = [p for p in (tmp_path / "run").rglob("*")
             if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaks == [], f"the SMTP password is in {leaks}"
    rendered = (tmp_path / "run" / "monitoring" / "alertmanager.yml").read_text()
    assert f"smtp_auth_password_file: '{tls_sink.password_file}'" in rendered
    assert "smtp_require_tls: true" in rendered
