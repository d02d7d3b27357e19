"""Database URLs: parsing into SQLAlchemy URLs and showing them without their password."""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from data_collector import ConfigurationError

__all__ = ["mask_url_text", "parse_url", "safe_url", "scrub"]

# ``scheme://user:password@host`` in free text (used when the URL cannot even be parsed).
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<at>@)")


def mask_url_text(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` in it replaced by ``***``."""
    return _USERINFO.sub(lambda m: f"{m['head']}***{m['at']}", text)


def parse_url(url: str | URL) -> URL:
    """A SQLAlchemy :class:`URL` from ``url``; :class:`ConfigurationError` (password masked) if invalid."""
    if isinstance(url, URL):
        return url
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"SqlDataWriter: url must be a non-empty str or sqlalchemy URL, got {url!r}")
    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigurationError(f"SqlDataWriter: invalid database url {mask_url_text(url)!r}") from None


def safe_url(url: URL) -> str:
    """The URL as text with the password shown as ``***``."""
    return url.render_as_string(hide_password=True)


def scrub(text: str, url: URL) -> str:
    """``text`` without the password of ``url`` (nor any ``scheme://user:password@`` password)."""
    password = url.password
    if password:
        for form in {str(password), quote_plus(str(password)), quote(str(password), safe="")}:
            text = text.replace(form, "***")
    return mask_url_text(text)
