"""A real SMTP server that keeps every mail it receives, for the local stack, demos and tests.

    settlewatch smtp-sink --port 2525 --maildir deploy/local/run/mail

Each message is written to MAILDIR as `<received ns>-<seq>.eml` (the bytes as received, written
to a temporary name and renamed, so a reader never sees half a mail) and one line is printed per
mail. Optional SMTP AUTH (`--auth-user`, `--auth-password-file`) lets a test check that
Alertmanager really logs in with the password from its password file.

In-process use (tests):

    with SmtpSink(tmp_path / "mail") as sink:          # a free port on 127.0.0.1
        ... point Alertmanager at sink.host, sink.port ...
        msg = sink.wait_for(lambda m: "ACQ-A" in m["Subject"], timeout=120)
        body = text_of(msg)

Switches for tests of the mail path (issue 15):
- `tls=(certfile, keyfile)` (`--tls-cert`, `--tls-key`): offer STARTTLS and require it before
  AUTH and MAIL, as a real relay does; `sink.tls_sessions` counts the sessions that upgraded.
- `sink.refuse = True` (`--refuse-for SECONDS` on the command line): answer every recipient
  with a temporary failure (451 at RCPT), as a greylisting or over-quota relay does;
  `sink.refused` counts them. Alertmanager tries the notification again later.

Not a relay: nothing is forwarded. It binds 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import email
import email.policy
import itertools
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import click
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class MaildirHandler:
    """aiosmtpd handler: store each message as a file, report it on `echo`."""

    def __init__(self, maildir: Path, echo: Callable[[str], None] | None = print) -> None:
        self.refuse = False  # True: 451 to every message (a relay that cannot take mail now)
        self.refused = 0
        self.tls_sessions = 0
        self.maildir = Path(maildir)
        self.maildir.mkdir(parents=True, exist_ok=True)
        self.echo = echo
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def handle_STARTTLS(self, server, session, envelope) -> bool:  # called, not awaited
        with self._lock:
            self.tls_sessions += 1
        return True

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        # Refused at RCPT, as greylisting and full mailboxes are: the client keeps the mail.
        if self.refuse:
            with self._lock:
                self.refused += 1
            return "451 4.3.0 settlewatch-smtpsink refuses mail for now (test switch)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        raw: bytes = envelope.original_content or envelope.content
        with self._lock:
            seq = next(self._seq)
        name = f"{time.time_ns()}-{seq:06d}.eml"
        tmp = self.maildir / f".{name}.tmp"
        tmp.write_bytes(raw)
        os.replace(tmp, self.maildir / name)
        if self.echo is not None:
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            self.echo(f"mail {seq} from={envelope.mail_from} to={','.join(envelope.rcpt_tos)} "
                      f"subject={msg.get('Subject', '')!r} bytes={len(raw)} file={name}")
        return "250 Message accepted for delivery"


class _Authenticator:
    def __init__(self, user: str, password: str) -> None:
        self._user, self._password = user.encode(), password.encode()
        self.logins: list[str] = []

    def __call__(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == self._user
              and auth_data.password == self._password)
        if ok:
            self.logins.append(mechanism)
        return AuthResult(success=ok, handled=False)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class SmtpSink:
    """Start and stop the sink in this process (aiosmtpd runs its own thread and loop)."""

    def __init__(self, maildir: Path | str, host: str = "127.0.0.1", port: int = 0, *,
                 auth: tuple[str, str] | None = None,
                 echo: Callable[[str], None] | None = None,
                 tls: tuple[str | Path, str | Path] | None = None) -> None:
        self.maildir = Path(maildir)
        self.host = host
        self.port = port or free_port(host)
        self.handler = MaildirHandler(self.maildir, echo=echo)
        self.authenticator = _Authenticator(*auth) if auth else None
        kwargs: dict = {}
        if tls is not None:
            import ssl
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            kwargs.update(tls_context=context, require_starttls=True)
        if self.authenticator is not None and tls is not None:
            kwargs.update(authenticator=self.authenticator, auth_required=True,
                          auth_require_tls=True, auth_exclude_mechanism=["LOGIN"])
        elif self.authenticator is not None:
            # Plain-text AUTH is acceptable on loopback only; a real relay would use STARTTLS.
            # PLAIN only: aiosmtpd's LOGIN challenge ("User Name") is not the "Username:" that
            # Alertmanager's LOGIN client expects, which then aborts with "unexpected server
            # challenge".
            kwargs.update(authenticator=self.authenticator, auth_required=True,
                          auth_require_tls=False, auth_exclude_mechanism=["LOGIN"])
            if host in ("127.0.0.1", "localhost", "::1"):
                warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS",
                                        UserWarning, "aiosmtpd.smtp")
        self._controller = Controller(self.handler, hostname=host, port=self.port,
                                      server_hostname="settlewatch-smtpsink", **kwargs)

    @property
    def refuse(self) -> bool:
        return self.handler.refuse

    @refuse.setter
    def refuse(self, value: bool) -> None:
        self.handler.refuse = value

    @property
    def refused(self) -> int:
        return self.handler.refused

    @property
    def tls_sessions(self) -> int:
        return self.handler.tls_sessions

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def files(self) -> list[Path]:
        return sorted(self.maildir.glob("*.eml"))

    def messages(self) -> list[EmailMessage]:
        return [read_message(p) for p in self.files()]

    def wait_for(self, predicate: Callable[[EmailMessage], bool], timeout: float,
                 poll: float = 0.2) -> EmailMessage:
        """The first stored message satisfying `predicate`; TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.messages():
                if predicate(msg):
                    return msg
            if time.monotonic() >= deadline:
                subjects = [m.get("Subject", "") for m in self.messages()]
                raise TimeoutError(f"no matching mail in {timeout:.0f}s; received: {subjects}")
            time.sleep(poll)


def read_message(path: Path | str) -> EmailMessage:
    return email.message_from_bytes(Path(path).read_bytes(), policy=email.policy.default)


def text_of(msg: EmailMessage, subtype: str = "plain") -> str:
    """The decoded text/plain (or text/html) body of a message, '' if it has none."""
    part = msg.get_body(preferencelist=(subtype,))
    return part.get_content() if part is not None else ""


@click.command("smtp-sink")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=2525, show_default=True)
@click.option("--maildir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the .eml files.")
@click.option("--auth-user", help="Require SMTP AUTH with this user.")
@click.option("--auth-password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="File holding the AUTH password (all of it: no trailing newline).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Offer STARTTLS with this certificate (PEM) and require it.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The certificate's private key (PEM).")
@click.option("--refuse-for", type=float, default=0.0,
              help="Answer 451 (try again later) to every mail for this many seconds.")
def smtp_sink_command(host: str, port: int, maildir: Path, auth_user: str | None,
                      auth_password_file: Path | None, tls_cert: Path | None = None,
                      tls_key: Path | None = None, refuse_for: float = 0.0) -> None:
    """A local SMTP server that keeps every mail as a file (for the demo and tests)."""
    auth = None
    if auth_user:
        if not auth_password_file:
            raise click.UsageError("--auth-user needs --auth-password-file")
        # Byte for byte, as Alertmanager reads its smtp_auth_password_file.
        auth = (auth_user, auth_password_file.read_text())

    def echo(line: str) -> None:
        click.echo(line)
        sys.stdout.flush()

    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    sink = SmtpSink(maildir, host, port, auth=auth, echo=echo,
                    tls=(tls_cert, tls_key) if tls_cert and tls_key else None)
    if refuse_for > 0:
        sink.refuse = True
        threading.Timer(refuse_for, lambda: setattr(sink, "refuse", False)).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sink.start()
    echo(f"smtpsink listening on {host}:{sink.port}, maildir {maildir}"
         + (f", AUTH as {auth_user}" if auth else "") + (", STARTTLS required" if tls_cert else "")
         + (f", refusing mail for {refuse_for:g}s" if refuse_for > 0 else ""))
    try:
        stop.wait()
    finally:
        sink.stop()
