"""Credentials never land in what a run writes: ``redact`` masks the password of a URI's userinfo
(``scheme://user:secret@host`` -> ``scheme://user:***@host``; a user name alone is kept: it names, it does not
authenticate) and credential-looking query parameters. Manifests, error lines, progress and system labels pass
through it; credentials themselves come from environment variables or URIs and are only handed to clients."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<info>[^@/\s\"'?#]+)@")
_QUERY = re.compile(r"(?i)(?P<key>[?&;](?:password|passwd|pwd|token|access_token|api_key|apikey|secret)=)[^&#\s\"']+")
MASK = "***"


def _userinfo(match: re.Match) -> str:
    user, colon, _ = match["info"].partition(":")
    return f"{match['scheme']}{user}:{MASK}@" if colon else match[0]


def redact(text: str) -> str:
    """``text`` with every credential in a URI masked."""
    if "://" not in text and "=" not in text:
        return text
    return _QUERY.sub(lambda m: m["key"] + MASK, _USERINFO.sub(_userinfo, text))
