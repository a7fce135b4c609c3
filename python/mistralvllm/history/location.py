"""A PostgreSQL history's URL: checked, and shown without its password."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

POSTGRES_SCHEMES = ("postgresql", "postgres")
_PASSWORD_PARAMETER = re.compile(r"(^|&)password=[^&]*")


def redacted_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) as ``***``."""
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return "<a URL that cannot be parsed>"
    netloc = parts.netloc
    if has_password:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    query = _PASSWORD_PARAMETER.sub(r"\1password=***", parts.query)
    return parts._replace(netloc=netloc, query=query).geturl()


def check_postgres_url(url: str) -> str:
    """``url`` when it is a PostgreSQL URL; a `ValueError` that shows it without
    its password otherwise (quoted first, as the config's errors quote values)."""
    expected = "expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as e:
        raise ValueError(f"'{redacted_url(url)}': {e}; {expected}") from None
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ValueError(f"'{redacted_url(url)}' is not a PostgreSQL URL; {expected}")
    return url
