"""streams.kafka_security: one set of settings, three kinds of Kafka client; the password only
from a file and never in a repr or a log line. (The clients against a real SASL_SSL and mutual
TLS broker: tests/integration/test_security_kafka.py.)"""
from __future__ import annotations

import ssl

import faust
import pytest

from streams.kafka_security import KafkaSecurity, KafkaSecurityError, from_environment

SECRET = "pw-that-must-not-leak"


@pytest.fixture
def files(tmp_path):
    pw = tmp_path / "password"
    pw.write_text(SECRET + "\n")
    # The files need not be valid PEM for the settings; ssl_context() is tested with real ones
    # in the integration test.
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("x")
    return tmp_path


def sasl_env(files) -> dict[str, str]:
    return {"SETTLEWATCH_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "SETTLEWATCH_KAFKA_SASL_USERNAME": "settlewatch",
            "SETTLEWATCH_KAFKA_SASL_PASSWORD_FILE": str(files / "password"),
            "SETTLEWATCH_KAFKA_SSL_CAFILE": str(files / "ca.pem")}


def test_no_settings_means_plaintext_and_no_extra_client_arguments():
    sec = from_environment({})
    assert sec.security_protocol == "PLAINTEXT"
    assert sec.kafka_python() == {} and sec.aiokafka() == {}
    assert sec.faust_credentials(faust) is None


def test_sasl_ssl_defaults_to_scram_sha_512_and_reads_the_password_from_its_file(files):
    sec = from_environment(sasl_env(files))
    assert sec.sasl_mechanism == "SCRAM-SHA-512"
    kp = sec.kafka_python()
    assert kp == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                  "sasl_plain_username": "settlewatch", "sasl_plain_password": SECRET,
                  "ssl_check_hostname": True, "ssl_cafile": str(files / "ca.pem")}


def test_the_password_is_in_no_repr_and_no_description(files):
    sec = from_environment(sasl_env(files))
    assert SECRET not in repr(sec) and SECRET not in sec.describe()
    assert "SCRAM-SHA-512 as settlewatch" in sec.describe()


def test_a_password_in_the_environment_is_refused(files):
    env = sasl_env(files) | {"SETTLEWATCH_KAFKA_SASL_PASSWORD": SECRET}
    with pytest.raises(KafkaSecurityError, match="PASSWORD_FILE"):
        from_environment(env)
    with pytest.raises(KafkaSecurityError, match="from a file"):
        KafkaSecurity.from_mapping({"security_protocol": "SASL_SSL", "sasl_password": SECRET})


@pytest.mark.parametrize("env, message", [
    ({"SETTLEWATCH_KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of"),
    ({"SETTLEWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs .*SASL_USERNAME"),
    ({"SETTLEWATCH_KAFKA_SASL_USERNAME": "u"}, "use SASL_SSL"),
    ({"SETTLEWATCH_KAFKA_SSL_CAFILE": "/etc/hostname"}, "use SSL or SASL_SSL"),
    ({"SETTLEWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
      "SETTLEWATCH_KAFKA_SSL_CERTFILE": "/etc/hostname"}, "both .*CERTFILE and .*KEYFILE"),
    ({"SETTLEWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
      "SETTLEWATCH_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "not a readable file"),
    ({"SETTLEWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
      "SETTLEWATCH_KAFKA_SSL_CHECK_HOSTNAME": "maybe"}, "true or false"),
])
def test_inconsistent_settings_are_refused_with_the_variable_named(env, message):
    with pytest.raises(KafkaSecurityError, match=message):
        from_environment(env)


def test_mutual_tls_gives_file_paths_to_kafka_python_and_a_context_to_aiokafka(files,
                                                                                monkeypatch):
    sec = from_environment({"SETTLEWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
                            "SETTLEWATCH_KAFKA_SSL_CAFILE": str(files / "ca.pem"),
                            "SETTLEWATCH_KAFKA_SSL_CERTFILE": str(files / "client.pem"),
                            "SETTLEWATCH_KAFKA_SSL_KEYFILE": str(files / "client.key")})
    assert sec.kafka_python() == {"security_protocol": "SSL", "ssl_check_hostname": True,
                                  "ssl_cafile": str(files / "ca.pem"),
                                  "ssl_certfile": str(files / "client.pem"),
                                  "ssl_keyfile": str(files / "client.key")}
    loaded = []
    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain",
                        lambda self, cert, key: loaded.append((cert, key)))
    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations",
                        lambda self, cafile=None, capath=None, cadata=None: None)
    kw = sec.aiokafka()
    assert kw["security_protocol"] == "SSL" and isinstance(kw["ssl_context"], ssl.SSLContext)
    assert kw["ssl_context"].check_hostname and kw["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert loaded == [(str(files / "client.pem"), str(files / "client.key"))]
    creds = sec.faust_credentials(faust)
    assert isinstance(creds, faust.SSLCredentials)


def test_faust_gets_sasl_credentials_over_tls(files, monkeypatch):
    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations",
                        lambda self, cafile=None, capath=None, cadata=None: None)
    creds = from_environment(sasl_env(files)).faust_credentials(faust)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-512"
    assert creds.username == "settlewatch" and creds.password == SECRET
    assert SECRET not in repr(creds)
