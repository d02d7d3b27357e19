"""Connection and security options of the OPC UA reader, as one frozen object.

:class:`OpcUaConnection` holds how :class:`~data_reader.opcua.OpcUaDataReader` reaches a server:
timeouts, security policy and mode, this client's certificate and key, the pinned server
certificate, the user identity, and the session's watchdog, reconnect and keep-alive timing. It
checks every value when it is created (certificates and keys are loaded then, so a missing file or
a wrong password fails at once, naming the option) and can be shared by several readers::

    from data_reader.opcua import OpcUaConnection, OpcUaDataReader

    secure = OpcUaConnection(
        security_policy="Basic256Sha256",          # security_mode defaults to SignAndEncrypt
        certificate="client-cert.pem",
        private_key="client-key.pem",
        username="operator",
        password="s3cret",
        timeout_s=2.0,
    )
    press = OpcUaDataReader("opc.tcp://press:4840/", reader_type="press", connection=secure)
    oven = OpcUaDataReader("opc.tcp://oven:4840/", reader_type="oven", connection=secure)

The same options remain accepted as keyword arguments of the reader (as configuration files give
them): ``OpcUaDataReader(endpoint, timeout_s=2.0, username="operator", ...)`` builds the object
itself. Giving ``connection=`` and one of its options as a keyword as well is refused.

=========================  ==================  =================================================
option                     default             meaning
=========================  ==================  =================================================
``timeout_s``              5.0                 per request
``security_policy``        ``"None"``          or Basic256Sha256, Aes128Sha256RsaOaep, Aes256Sha256RsaPss
``security_mode``          by the policy       ``"None"`` without a policy, else ``"SignAndEncrypt"``
``certificate``            None                this client's certificate (path, PEM or DER bytes)
``private_key``            None                its private key (path or bytes)
``private_key_password``   None                the key's password
``server_certificate``     None                the server's certificate, pinned (else from its endpoints)
``application_uri``        certificate's URI   else ``urn:data-collector:opcua-client``
``username``/``password``  None                user name authentication (never logged or shown)
``user_certificate``       None                certificate user authentication, with ``user_private_key``
``user_private_key``       None                (and ``user_private_key_password``)
``session_timeout_s``      60.0                session timeout asked of the server
``watchdog_interval_s``    1.0                 keep-alive watchdog period
``reconnect_min_delay_s``  0.5                 first reconnect delay, doubling up to
``reconnect_max_delay_s``  10.0                this cap
``keepalive_s``            1.0                 subscription keep-alive period
=========================  ==================  =================================================
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtensionOID

from data_collector import ConfigurationError

from ._connection import SECURITY_MODES, SECURITY_POLICIES, Credentials

__all__ = ["OpcUaConnection", "PathOrBytes"]

PathOrBytes = str | Path | bytes
_DEFAULT_APPLICATION_URI = "urn:data-collector:opcua-client"


@dataclass(frozen=True, kw_only=True)
class OpcUaConnection:
    """How an OPC UA reader reaches its server (see the module docstring for every option)."""

    timeout_s: float = 5.0
    security_policy: str = "None"
    security_mode: str | None = None
    certificate: PathOrBytes | None = None
    private_key: PathOrBytes | None = field(default=None, repr=False)
    private_key_password: str | None = field(default=None, repr=False)
    server_certificate: PathOrBytes | None = None
    application_uri: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    user_certificate: PathOrBytes | None = None
    user_private_key: PathOrBytes | None = field(default=None, repr=False)
    user_private_key_password: str | None = field(default=None, repr=False)
    session_timeout_s: float = 60.0
    watchdog_interval_s: float = 1.0
    reconnect_min_delay_s: float = 0.5
    reconnect_max_delay_s: float = 10.0
    keepalive_s: float = 1.0
    #: Loaded when created: the security material, the effective mode and application URI.
    credentials: Credentials = field(init=False, repr=False, compare=False)
    effective_security_mode: str = field(init=False, repr=False, compare=False)
    effective_application_uri: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        mode, uri, credentials = _check(type(self).__name__, self)
        object.__setattr__(self, "effective_security_mode", mode)
        object.__setattr__(self, "effective_application_uri", uri)
        object.__setattr__(self, "credentials", credentials)

    def replace(self, **changes: Any) -> OpcUaConnection:
        """A copy with ``changes`` (checked like a new object)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The names of the options (the fields given to the constructor)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.init)


def _check(cls: str, c: OpcUaConnection) -> tuple[str, str, Credentials]:
    for name in (
        "timeout_s",
        "session_timeout_s",
        "watchdog_interval_s",
        "reconnect_min_delay_s",
        "reconnect_max_delay_s",
        "keepalive_s",
    ):
        _check_positive(cls, name, getattr(c, name))
    if c.reconnect_max_delay_s < c.reconnect_min_delay_s:
        raise ConfigurationError(
            f"{cls}: reconnect_max_delay_s ({c.reconnect_max_delay_s!r}) is below "
            f"reconnect_min_delay_s ({c.reconnect_min_delay_s!r})"
        )
    policy = c.security_policy
    if policy not in SECURITY_POLICIES:
        raise ConfigurationError(
            f"{cls}: security_policy must be one of {', '.join(SECURITY_POLICIES)}, got {policy!r}"
        )
    mode = c.security_mode
    if mode is None:
        mode = "None" if policy == "None" else "SignAndEncrypt"
    if mode not in SECURITY_MODES:
        raise ConfigurationError(
            f"{cls}: security_mode must be one of {', '.join(SECURITY_MODES)}, got {mode!r}"
        )
    if (policy == "None") != (mode == "None"):
        raise ConfigurationError(
            f"{cls}: security_policy {policy!r} does not go with security_mode "
            f"{mode!r} (None goes with None; a policy needs Sign or SignAndEncrypt)"
        )
    username, password = c.username, c.password
    if username is not None and (not isinstance(username, str) or not username):
        raise ConfigurationError(f"{cls}: username must be a non-empty str, got {username!r}")
    if password is not None and not isinstance(password, str):
        raise ConfigurationError(f"{cls}: password must be a str")
    if password is not None and username is None:
        raise ConfigurationError(f"{cls}: a password was given without a username")
    cert_der: bytes | None = None
    key_der: bytes | None = None
    cert_uri: str | None = None
    if policy != "None":
        if c.certificate is None or c.private_key is None:
            raise ConfigurationError(
                f"{cls}: security_policy {policy!r} needs the certificate and private_key of this client"
            )
        cert = _load_certificate(cls, "certificate", c.certificate)
        cert_der = cert.public_bytes(serialization.Encoding.DER)
        cert_uri = _certificate_uri(cert)
        key_der = _key_der(_load_private_key(cls, "private_key", c.private_key, c.private_key_password))
    elif c.certificate is not None or c.private_key is not None:
        raise ConfigurationError(
            f"{cls}: certificate/private_key are only used with a security_policy other than 'None'"
        )
    server_der = None
    if c.server_certificate is not None:
        server_der = _load_certificate(cls, "server_certificate", c.server_certificate).public_bytes(
            serialization.Encoding.DER
        )
    user_cert = user_key = None
    if (c.user_certificate is None) != (c.user_private_key is None):
        raise ConfigurationError(f"{cls}: user_certificate and user_private_key go together")
    if c.user_certificate is not None and c.user_private_key is not None:
        if username is not None:
            raise ConfigurationError(f"{cls}: choose username/password or user_certificate, not both")
        user_cert = _load_certificate(cls, "user_certificate", c.user_certificate)
        user_key = _load_private_key(cls, "user_private_key", c.user_private_key, c.user_private_key_password)
    uri = c.application_uri if c.application_uri is not None else (cert_uri or _DEFAULT_APPLICATION_URI)
    credentials = Credentials(
        certificate=cert_der,
        private_key=key_der,
        server_certificate=server_der,
        username=username,
        password=password,
        user_certificate=user_cert,
        user_private_key=user_key,
    )
    return mode, uri, credentials


def _check_positive(cls: str, name: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(f"{cls}: {name} must be a finite number > 0, got {value!r}")


def _read_bytes(cls: str, name: str, source: PathOrBytes) -> bytes:
    if isinstance(source, bytes):
        return source
    if not isinstance(source, str | Path):
        raise ConfigurationError(f"{cls}: {name} must be a path or bytes, got {type(source).__name__}")
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{cls}: cannot read {name} {str(source)!r}: {exc.strerror}") from None


def _load_certificate(cls: str, name: str, source: PathOrBytes) -> x509.Certificate:
    data = _read_bytes(cls, name, source)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        where = repr(str(source)) if not isinstance(source, bytes) else "(bytes)"
        raise ConfigurationError(f"{cls}: {name} {where} is not a PEM or DER certificate: {exc}") from None


def _load_private_key(cls: str, name: str, source: PathOrBytes, password: str | None) -> PrivateKeyTypes:
    data = _read_bytes(cls, name, source)
    secret = password.encode("utf-8") if password is not None else None
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return serialization.load_pem_private_key(data, secret)
        return serialization.load_der_private_key(data, secret)
    except (ValueError, TypeError):
        where = repr(str(source)) if not isinstance(source, bytes) else "(bytes)"
        # the library's message may mention the password; say only what is wrong
        raise ConfigurationError(
            f"{cls}: {name} {where} is not a PEM/DER private key, or its password is missing or wrong"
        ) from None


def _key_der(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate_uri(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        return None
    assert isinstance(san, x509.SubjectAlternativeName)
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None
