"""A PostgreSQL history's URL: checked, and shown without its password."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

POSTGRES_SCHEMES = ("postgresql", "postgres")
# Read from the text itself, not a URL parser, so that a password with an
# unescaped "/" or "@", or a URL with no scheme, does not slip through: what
# follows the first ":" of the part before the last "@" is taken for one.
_USERINFO = re.compile(r"^(?P<head>(?:[^/@]*//)?)(?P<userinfo>.*)@", re.DOTALL)
_PASSWORD_PARAMETER = re.compile(r"(password\s*=\s*)('[^']*'|[^&\s]*)", re.IGNORECASE)


def redacted_url(url: str) -> str:
    """``url`` with its password (after the user name, or a ``password=`` parameter) as ``***``."""
    match = _USERINFO.match(url)
    if match and ":" in match["userinfo"]:
        user = match["userinfo"].split(":", 1)[0]
        url = f"{match['head']}{user}:***@{url[match.end() :]}"
    return _PASSWORD_PARAMETER.sub(r"\1***", url)


def check_postgres_url(url: str) -> str:
    """``url`` when it is a PostgreSQL URL; a `ValueError` that shows it without
    its password otherwise (quoted first, as the config's errors quote values)."""
    expected = "expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as e:
        raise ValueError(f"'{redacted_url(url)}': {redacted_url(str(e))}; {expected}") from None
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ValueError(f"'{redacted_url(url)}' is not a PostgreSQL URL; {expected}")
    return url
