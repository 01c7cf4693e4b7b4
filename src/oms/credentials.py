"""Secrets in settings: read tokens from files, keep passwords out of prints and logs.

A token on the command line is readable by every local user in
``/proc/PID/cmdline``; the environment (``/proc/PID/environ``, owner only) or a
file the operator protects is not. A database URL's password is replaced by
``***`` wherever the service prints or logs the URL (:func:`redact_url`), and
the JSON log formatter passes every line through :func:`redact_text`, so a URL
quoted in an exception's text is covered too.
"""

from __future__ import annotations

import re
import stat
import sys
from collections.abc import Collection
from dataclasses import fields
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

__all__ = [
    "MASK",
    "read_node_tokens",
    "read_token_file",
    "redact_text",
    "redact_url",
    "redacted_repr",
]

MASK = "***"
#: ``scheme://user:password@``: the password is the run of characters up to the last
#: ``@`` before the host (passwords with ``@`` must be percent-encoded in a URL anyway).
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@")


def redact_url(url: str) -> str:
    """``url`` with its password (if any) shown as ``***``; everything else as given."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return redact_text(url)
    if parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)


def redacted_repr(settings: Any, secrets: Collection[str]) -> str:
    """A dataclass's repr with the ``secrets`` fields masked and ``database_url`` redacted."""
    shown = []
    for f in fields(settings):
        value = getattr(settings, f.name)
        if f.name in secrets and value is not None:
            value = MASK
        elif f.name == "database_url":
            value = redact_url(value)
        shown.append(f"{f.name}={value!r}")
    return f"{type(settings).__name__}({', '.join(shown)})"


def redact_text(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` in it masked."""
    if "://" not in text:  # the common case (every access-log line): no regex at all
        return text
    return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", text)


def read_token_file(path: str, what: str) -> str:
    """The token in ``path``: its text without surrounding whitespace (editors add a newline).

    Raises ValueError naming ``what`` (the flag or variable) for a file that
    cannot be read or holds nothing; warns on stderr when other users may read it.
    """
    try:
        file = Path(path)
        token = file.read_text(encoding="utf-8").strip()
        mode = file.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"{what}: cannot read {path!r}: {reason}") from None
    if not token:
        raise ValueError(f"{what}: {path!r} is empty")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(
            f"warning: {what} {path!r} can be read by other users (chmod 600 it)",
            file=sys.stderr,
        )
    return token


def read_node_tokens(path: str | None) -> dict[bytes, str]:
    """Node tokens (token -> node id) from ``path``: one ``NODE_ID TOKEN`` per line; blank
    lines and ``#`` comments skipped. A node token reaches only its node's shipments.

    Raises ValueError naming the line for anything else (a token shared by two nodes too).
    """
    if not path:
        return {}
    text = read_token_file(path, "OMS_NODE_TOKENS_FILE")
    tokens: dict[bytes, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"OMS_NODE_TOKENS_FILE line {number}: expected 'NODE_ID TOKEN'")
        node, token = parts
        if token.encode() in tokens:
            raise ValueError(f"OMS_NODE_TOKENS_FILE line {number}: token already used by a node")
        tokens[token.encode()] = node
    return tokens
