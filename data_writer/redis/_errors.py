"""Which Redis errors pass (retry the batch later) and which do not, and URLs without their password.

Transient: the connection failed, timed out or went away; the server is loading its data, busy
with a script, out of memory (``maxmemory``), refusing writes because it cannot save (MISCONF), or
a read-only replica (a failover). Permanent: a refused login or permission (retrying with the same
password cannot help; the collector's spool keeps the batch in quarantine), a key of another type
(another application uses the prefix) and anything unknown.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import redis

from data_collector import WriterError

__all__ = ["RedisWriteError", "is_transient_redis_error", "safe_url", "scrub"]

#: error codes (first word of the server's reply) that say "try again later"
_TRANSIENT_CODES = frozenset(
    {"OOM", "LOADING", "BUSY", "MISCONF", "MASTERDOWN", "TRYAGAIN", "NOREPLICAS", "CLUSTERDOWN", "READONLY"}
)


class RedisWriteError(WriterError):
    """A failed Redis operation; :attr:`transient` says whether retrying may fix it."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def _code(exc: redis.exceptions.ResponseError) -> str:
    code = getattr(exc, "status_code", None)  # redis-py >= 7 strips the code from the text
    if isinstance(code, str) and code and code != "ERR":
        return code.upper()
    text = str(exc).lstrip()
    if text.startswith("Transaction discarded"):  # EXECABORT: the reason of the refused command
        text = text.partition(":")[2].lstrip()
    return text.split(" ", 1)[0].upper() if text else ""


def is_transient_redis_error(exc: BaseException) -> bool:
    """Whether retrying the operation that raised ``exc`` later may succeed (see the module)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 10:
        seen.add(id(current))
        if isinstance(current, RedisWriteError):
            return current.transient
        if isinstance(current, redis.exceptions.AuthenticationError | redis.exceptions.AuthorizationError):
            return False
        if isinstance(current, redis.exceptions.NoPermissionError):
            return False
        if isinstance(current, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
            return True
        if isinstance(current, redis.exceptions.ReadOnlyError):
            return True
        if isinstance(current, redis.exceptions.ResponseError):
            return _code(current) in _TRANSIENT_CODES
        if isinstance(current, redis.exceptions.RedisError):
            return False
        if isinstance(current, OSError | TimeoutError):
            return True
        current = current.__cause__
    return False


def safe_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` query) shown as ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}{':***' if colon else ''}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() == "password" for k, _ in pairs):
            query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, *secrets: str | None) -> str:
    """``text`` with every non-empty secret in it (also URL-quoted) replaced by ``***``."""
    for secret in secrets:
        if secret:
            for form in {secret, quote(secret, safe="")}:
                text = text.replace(form, "***")
    return text
