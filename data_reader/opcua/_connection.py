"""How one OPC UA connection is made, and what its failures mean.

Used by :class:`._link.Link` at every (re)connect: the connection settings (:class:`LinkOptions`,
with the loaded security material in :class:`Credentials`), a configured asyncua ``Client``
(:func:`new_client`, :func:`set_security`), the server's operation limits (:func:`read_limits`),
and the readable text and classification of a failure: :func:`describe_error`, :class:`ConnectFailed`
(``permanent`` when retrying cannot help, see :func:`connect_error`) and the service results that
mean the session is gone (:data:`SESSION_LOST`). Passwords never reach a log line or an error
text: asyncua's DEBUG dumps of requests are redacted (:class:`_RedactCredentials`) and error texts
scrubbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from asyncua.client.client import Client
from asyncua.crypto import security_policies, uacrypto
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from ._convert import status_name, status_text
from ._ua import read_value_id, ua

__all__ = [
    "SECURITY_MODES",
    "SECURITY_POLICIES",
    "SESSION_LOST",
    "ConnectFailed",
    "Credentials",
    "LinkOptions",
    "connect_error",
    "describe_error",
    "disconnect",
    "new_client",
    "read_limits",
    "set_security",
    "status_of",
]

_POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128Sha256RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256Sha256RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_MODES: dict[str, ua.MessageSecurityMode] = {
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}
SECURITY_POLICIES = ("None", *_POLICIES)
SECURITY_MODES = ("None", *_MODES)

#: Rejections that retrying cannot cure: wrong credentials, certificates or security settings.
_PERMANENT = frozenset(
    {
        "BadUserAccessDenied",
        "BadIdentityTokenInvalid",
        "BadIdentityTokenRejected",
        "BadSecurityPolicyRejected",
        "BadSecurityModeRejected",
        "BadSecurityChecksFailed",
        "BadCertificateInvalid",
        "BadCertificateUntrusted",
        "BadCertificateUriInvalid",
        "BadCertificateHostNameInvalid",
        "BadCertificateTimeInvalid",
        "BadCertificateRevoked",
        "BadCertificateUseNotAllowed",
        "BadApplicationSignatureInvalid",
        "BadUserSignatureInvalid",
    }
)
#: Service results meaning the session or channel is gone (a reconnect is due).
SESSION_LOST = frozenset(
    {
        "BadSessionIdInvalid",
        "BadSessionClosed",
        "BadSessionNotActivated",
        "BadSecureChannelIdInvalid",
        "BadSecureChannelClosed",
        "BadConnectionClosed",
        "BadServerHalted",
        "BadShutdown",
        "BadNotConnected",
        "BadCommunicationError",
        "BadTcpSecureChannelUnknown",
    }
)


@dataclass(frozen=True)
class Credentials:
    """Loaded security material (never shown in a repr: the password and keys stay out of logs)."""

    certificate: bytes | None = field(default=None, repr=False)  # DER
    private_key: bytes | None = field(default=None, repr=False)  # DER, unencrypted
    server_certificate: bytes | None = field(default=None, repr=False)  # DER
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    user_certificate: x509.Certificate | None = field(default=None, repr=False)
    user_private_key: PrivateKeyTypes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class LinkOptions:
    endpoint: str  # without user info
    timeout_s: float
    security_policy: str
    security_mode: str
    application_uri: str
    session_timeout_s: float
    watchdog_interval_s: float
    reconnect_min_delay_s: float
    reconnect_max_delay_s: float
    keepalive_s: float
    source_timestamps: bool
    credentials: Credentials = field(repr=False)
    item_retry_min_s: float = 0.5
    item_retry_max_s: float = 5.0


class _RedactCredentials(logging.Filter):
    """Keeps user identity tokens (passwords) out of asyncua's DEBUG dumps of requests.

    asyncua logs every request it sends at DEBUG (``Sending: %s``); an ActivateSession request
    carries the user's password (in clear text inside an encrypted channel). This filter, set on
    asyncua's own protocol loggers, replaces that argument; it adds no handler and drops nothing.
    """

    _SECRET_TYPES = frozenset(
        {"ActivateSessionRequest", "ActivateSessionParameters", "UserNameIdentityToken"}
    )

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(type(a).__name__ in self._SECRET_TYPES for a in args):
            record.args = tuple(
                f"{type(a).__name__}(<credentials redacted>)" if type(a).__name__ in self._SECRET_TYPES else a
                for a in args
            )
        return True


_REDACT = _RedactCredentials()
_REDACTED_LOGGERS = (
    "asyncua.client.ua_client.UASocketProtocol",
    "asyncua.client.ua_client.UaClient",
    "asyncua.client.ua_session.UaSession",
    "asyncua.client.client",
)


def _install_redaction() -> None:
    for name in _REDACTED_LOGGERS:
        target = logging.getLogger(name)
        if _REDACT not in target.filters:
            target.addFilter(_REDACT)


class ConnectFailed(Exception):
    """A connection attempt failed; ``permanent`` when retrying will not help."""

    def __init__(self, text: str, permanent: bool) -> None:
        super().__init__(text)
        self.permanent = permanent


def describe_error(exc: BaseException) -> str:
    """A short, readable text for a driver exception (never contains credentials)."""
    if isinstance(exc, ua.UaStatusCodeError):
        return status_text(int(exc.code))
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return f"timeout ({exc})" if str(exc) else "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused ({exc})"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, ConnectFailed) else text


def status_of(exc: BaseException) -> str | None:
    """The status name of an OPC UA service error, else None."""
    if isinstance(exc, ua.UaStatusCodeError):
        return status_name(int(exc.code))
    return None


def new_client(opts: LinkOptions) -> Client:
    """A fresh asyncua ``Client`` for ``opts``: timeouts, application identity and user identity."""
    creds = opts.credentials
    client = Client(opts.endpoint, timeout=opts.timeout_s, watchdog_intervall=opts.watchdog_interval_s)
    client.name = client.description = "data-collector"
    client.application_uri = opts.application_uri
    client.session_timeout = int(opts.session_timeout_s * 1000)
    if creds.username is not None:
        client.set_user(creds.username)
    if creds.password is not None:
        client.set_password(creds.password)
    if creds.user_certificate is not None:
        client.user_certificate = creds.user_certificate
        client.user_private_key = creds.user_private_key
    if creds.password is not None or creds.user_certificate is not None:
        _install_redaction()
    return client


async def set_security(client: Client, opts: LinkOptions) -> None:
    """Give ``client`` the security policy, mode and certificates of ``opts`` (none for "None")."""
    if opts.security_policy == "None":
        return
    creds = opts.credentials
    assert creds.certificate is not None and creds.private_key is not None
    server_cert = (
        uacrypto.CertProperties(creds.server_certificate, "der")
        if creds.server_certificate is not None
        else None
    )
    await client.set_security(
        _POLICIES[opts.security_policy],
        uacrypto.CertProperties(creds.certificate, "der"),
        uacrypto.CertProperties(creds.private_key, "der"),
        None,
        server_cert,
        _MODES[opts.security_mode],
    )


async def read_limits(client: Client) -> tuple[int, int]:
    """The server's MaxNodesPerRead and MaxMonitoredItemsPerCall (0: no limit, or not told)."""
    ids = (
        ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
        ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
    )
    params = ua.ReadParameters()
    params.NodesToRead = [read_value_id(ua.NodeId(ident)) for ident in ids]
    results = await client.uaclient.read(params)
    limits = []
    for dv in results:
        value = dv.Value.Value if dv.Value is not None else None
        good = dv.StatusCode is None or dv.StatusCode.is_good()
        limits.append(int(value) if good and isinstance(value, int) and value > 0 else 0)
    return limits[0], limits[1]


def _channel_open(client: Client) -> bool:
    """Whether ``client`` has a socket that is not closed (asyncua 1.x: state ``"closed"``; 2.x:
    ``UASocketState.CLOSED``, whose value is ``"closed"``)."""
    protocol = getattr(client.uaclient, "protocol", None)
    if protocol is None:
        return False
    state = getattr(protocol, "state", None)
    return getattr(state, "value", state) != "closed"


async def disconnect(client: Client, timeout_s: float) -> None:
    """Close ``client``'s session and connection, ignoring every failure, within ``timeout_s``.

    With no open socket (a connection attempt that failed, or a connection the server dropped),
    ``Client.disconnect()`` would log asyncua's WARNING ``close_secure_channel was called but
    connection is closed``, once per reconnect attempt. There is no channel to close then, so only
    the session is closed (it stops asyncua's background tasks and sends nothing; for a session
    that was never created it logs nothing) and the socket released. A session lost with its
    connection still makes asyncua log ``close_session was called but connection is closed``
    once, beside our own WARNING about the loss: the library adds no logging filter to hide it.
    """
    with contextlib.suppress(BaseException):
        async with asyncio.timeout(timeout_s):
            if _channel_open(client):
                await client.disconnect()
            else:
                await client.close_session()
                client.disconnect_socket()


def connect_error(opts: LinkOptions, exc: Exception) -> ConnectFailed:
    """What a failed connection attempt to ``opts.endpoint`` means, and whether retrying can help."""
    where = f"cannot connect to {opts.endpoint}"
    status = status_of(exc)
    text = describe_error(exc)
    if status in ("BadUserAccessDenied", "BadIdentityTokenInvalid", "BadIdentityTokenRejected"):
        creds = opts.credentials
        if creds.username is not None:
            who = f"user {creds.username!r} (check username and password)"
        elif creds.user_certificate is not None:
            who = f"the user certificate {creds.user_certificate.subject.rfc4514_string()!r}"
        else:
            who = "anonymous access (give username/password or a user certificate)"
        text = f"{text}: the server rejected {who}"
    elif isinstance(exc, TimeoutError) and opts.credentials.server_certificate is not None:
        text += " (is server_certificate really this server's certificate?)"
    permanent = status in _PERMANENT
    if isinstance(exc, ua.UaError) and not isinstance(exc, ua.UaStatusCodeError):
        # asyncua's own checks: no endpoint with the requested policy/mode, certificate mismatch
        permanent = "endpoint" in str(exc).lower() or "certificate" in str(exc).lower()
    return ConnectFailed(_scrub(f"{where}: {text}", opts.credentials.password), permanent)


def _scrub(text: str, secret: str | None) -> str:
    if secret and len(secret) >= 1:
        text = text.replace(secret, "***")
    return text
