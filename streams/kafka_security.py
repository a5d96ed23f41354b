"""How every settlewatch Kafka client authenticates and encrypts: one place for all three.

The worker (faust + its own aiokafka clients + a kafka-python admin check), audit replay and
the simulator (kafka-python) all take their security settings from `KafkaSecurity`, built
from the environment (or a mapping with the same keys, e.g. a config file's section):

    SETTLEWATCH_KAFKA_SECURITY_PROTOCOL    PLAINTEXT (default), SSL, SASL_SSL, SASL_PLAINTEXT
    SETTLEWATCH_KAFKA_SASL_MECHANISM       SCRAM-SHA-512 (default with SASL), SCRAM-SHA-256, PLAIN
    SETTLEWATCH_KAFKA_SASL_USERNAME
    SETTLEWATCH_KAFKA_SASL_PASSWORD_FILE   the password, from a file only (never the
                                           environment or a flag: both show up in `ps e`,
                                           /proc/<pid>/environ and shell history); one
                                           trailing newline is ignored
    SETTLEWATCH_KAFKA_SSL_CAFILE           CA bundle that signed the brokers' certificates
    SETTLEWATCH_KAFKA_SSL_CERTFILE         client certificate (mutual TLS; PEM)
    SETTLEWATCH_KAFKA_SSL_KEYFILE          its private key (PEM, unencrypted; keep it 0600)
    SETTLEWATCH_KAFKA_SSL_CHECK_HOSTNAME   true (default) / false

Two deployments this is meant for: SASL_SSL with SCRAM-SHA-512 (user and password, TLS with the
CA file), and SSL with a client certificate (mutual TLS: the broker maps the certificate's
subject to a principal for its ACLs). See SECURITY.md.

Settings per client:
- `kafka_python()`: keyword arguments for kafka-python's KafkaProducer/KafkaConsumer/
  KafkaAdminClient (file paths, so that they pickle into replay's worker processes);
- `aiokafka()`: keyword arguments for aiokafka's clients (an `ssl.SSLContext`);
- `faust_credentials(faust)`: the `broker_credentials` of a faust App.

The password is read when a client's settings are built, and never appears in `repr`,
`describe()` or any log line. Bottom layer of the package: stdlib only at import time.
"""
from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PREFIX = "SETTLEWATCH_KAFKA_"
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
_KEYS = ("security_protocol", "sasl_mechanism", "sasl_username", "sasl_password_file",
         "ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")


class KafkaSecurityError(ValueError):
    """The Kafka security settings are inconsistent or incomplete (message says which)."""


@dataclass(frozen=True)
class KafkaSecurity:
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password_file: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True

    def __post_init__(self) -> None:
        p = self.security_protocol.upper()
        object.__setattr__(self, "security_protocol", p)
        if p not in PROTOCOLS:
            raise KafkaSecurityError(f"{PREFIX}SECURITY_PROTOCOL must be one of "
                                     f"{', '.join(PROTOCOLS)}, got {self.security_protocol!r}")
        if self.sasl:
            mech = (self.sasl_mechanism or "SCRAM-SHA-512").upper()
            object.__setattr__(self, "sasl_mechanism", mech)
            if mech not in MECHANISMS:
                raise KafkaSecurityError(f"{PREFIX}SASL_MECHANISM must be one of "
                                         f"{', '.join(MECHANISMS)}, got {mech!r}")
            if not self.sasl_username or not self.sasl_password_file:
                raise KafkaSecurityError(f"{p} needs {PREFIX}SASL_USERNAME and "
                                         f"{PREFIX}SASL_PASSWORD_FILE")
        elif self.sasl_mechanism or self.sasl_username or self.sasl_password_file:
            raise KafkaSecurityError(f"SASL settings given but {PREFIX}SECURITY_PROTOCOL is "
                                     f"{p} (use SASL_SSL)")
        if not self.tls and (self.ssl_cafile or self.ssl_certfile or self.ssl_keyfile):
            raise KafkaSecurityError(f"TLS files given but {PREFIX}SECURITY_PROTOCOL is {p} "
                                     f"(use SSL or SASL_SSL)")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise KafkaSecurityError(f"mutual TLS needs both {PREFIX}SSL_CERTFILE and "
                                     f"{PREFIX}SSL_KEYFILE")
        for name in ("sasl_password_file", "ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                raise KafkaSecurityError(f"{PREFIX}{name.upper()} {path} is not a readable file")

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> KafkaSecurity:
        """From a mapping with the field names as keys (e.g. a config file's [kafka] table);
        a `sasl_password` key is refused: the password comes from a file."""
        if "sasl_password" in values:
            raise KafkaSecurityError("the SASL password is read from a file only "
                                     "(sasl_password_file), never given inline")
        unknown = set(values) - set(_KEYS)
        if unknown:
            raise KafkaSecurityError(f"unknown Kafka security settings: {sorted(unknown)}")
        kw: dict[str, Any] = {k: (str(v) if v is not None and k != "ssl_check_hostname" else v)
                              for k, v in values.items() if v not in (None, "")}
        if "ssl_check_hostname" in kw and not isinstance(kw["ssl_check_hostname"], bool):
            kw["ssl_check_hostname"] = _boolean(str(kw["ssl_check_hostname"]))
        return cls(**kw)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> KafkaSecurity:
        """From the SETTLEWATCH_KAFKA_* variables (module docstring); PLAINTEXT when none."""
        env = os.environ if environ is None else environ
        if env.get(PREFIX + "SASL_PASSWORD"):
            raise KafkaSecurityError(f"{PREFIX}SASL_PASSWORD is not read (the environment "
                                     f"is visible to other tools); put the password in a file "
                                     f"and set {PREFIX}SASL_PASSWORD_FILE")
        return cls.from_mapping({k: env.get(PREFIX + k.upper()) for k in _KEYS})

    # -- properties -----------------------------------------------------------------------

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def describe(self) -> str:
        """A one-line summary for logs: no password, no key material."""
        parts = [self.security_protocol]
        if self.sasl:
            parts.append(f"{self.sasl_mechanism} as {self.sasl_username}")
        if self.tls:
            parts.append(f"CA {self.ssl_cafile or 'system default'}")
            if self.ssl_certfile:
                parts.append(f"client certificate {self.ssl_certfile}")
            if not self.ssl_check_hostname:
                parts.append("hostname NOT checked")
        return ", ".join(parts)

    def password(self) -> str:
        if not self.sasl_password_file:
            raise KafkaSecurityError("no SASL password file")
        with open(self.sasl_password_file, encoding="utf-8") as f:
            text = f.read()
        return text[:-1] if text.endswith("\n") else text

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client TLS context (CA, optional client certificate), or None without TLS."""
        if not self.tls:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ssl_cafile)
        ctx.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile:
            ctx.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return ctx

    # -- per client -----------------------------------------------------------------------

    def _common(self) -> dict[str, Any]:
        """The protocol and the SASL login, which both client libraries name alike."""
        out: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl:
            out.update(sasl_mechanism=self.sasl_mechanism,
                       sasl_plain_username=self.sasl_username,
                       sasl_plain_password=self.password())
        return out

    def kafka_python(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients ({} for PLAINTEXT)."""
        if self.security_protocol == "PLAINTEXT":
            return {}
        out = self._common()
        if self.tls:
            out["ssl_check_hostname"] = self.ssl_check_hostname
            if self.ssl_cafile:
                out["ssl_cafile"] = self.ssl_cafile
            if self.ssl_certfile:
                out.update(ssl_certfile=self.ssl_certfile, ssl_keyfile=self.ssl_keyfile)
        return out

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients ({} for PLAINTEXT)."""
        if self.security_protocol == "PLAINTEXT":
            return {}
        out = self._common()
        if self.tls:
            out["ssl_context"] = self.ssl_context()
        return out

    def faust_credentials(self, faust: Any) -> Any:
        """`broker_credentials` for faust.App: SASLCredentials, SSLCredentials or None.

        `faust` is the faust module, passed in by the worker: this bottom-layer module does not
        import it (replay and the simulator must not pull faust in)."""
        if self.security_protocol == "PLAINTEXT":
            return None
        if self.sasl:
            if self.security_protocol == "SASL_PLAINTEXT":
                return faust.SASLCredentials(username=self.sasl_username,
                                             password=self.password(),
                                             mechanism=self.sasl_mechanism)
            return faust.SASLCredentials(username=self.sasl_username, password=self.password(),
                                         mechanism=self.sasl_mechanism,
                                         ssl_context=self.ssl_context())
        return faust.SSLCredentials(self.ssl_context())


def _boolean(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise KafkaSecurityError(f"{PREFIX}SSL_CHECK_HOSTNAME must be true or false, got {text!r}")


def from_environment(environ: Mapping[str, str] | None = None) -> KafkaSecurity:
    """`KafkaSecurity.from_environment`: what every client of this process uses."""
    return KafkaSecurity.from_environment(environ)
