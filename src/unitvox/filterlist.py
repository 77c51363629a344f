"""Filter lists: text files of segment ids or source paths that prepare and train leave out.

Made by: unitvox diagnose data --config jobs/base.yaml --run RUN   (writes RUN/diagnose/data/filter.txt)
Used by: unitvox pipeline --config jobs/base.yaml --run RUN \
             --set prepare.exclude=RUN/diagnose/data/filter.txt --set train.exclude=RUN/diagnose/data/filter.txt

One entry per line; blank lines, lines starting with `#` and a trailing ` # comment` are ignored,
so a list can say why each entry is there. prepare matches an entry against a segment id or a
recording's path (as listed under `prepare.input`, or its URI); train matches segment ids.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

from unitvox.config.common import ConfigError
from unitvox.store import StoreError, read_uri_text

# A comment starts at a `#` that opens the line or follows whitespace, so `take#2.wav` stays a name.
_COMMENT = re.compile(r"(^|\s)#.*$")


def parse_filter_list(text: str) -> list[str]:
    """The entries of a filter list's text, in order, without comments or blank lines."""
    entries = []
    for line in text.splitlines():
        entry = _COMMENT.sub("", line).strip()
        if entry:
            entries.append(entry)
    return entries


def read_filter_list(uri: str, key: str) -> frozenset[str]:
    """The entries of the filter list at `uri` (a path, file:// or s3:// URI); empty when `uri` is "".

    Raises:
        ConfigError: the list is missing or unreadable; the message names the config `key` and the file.
    """
    return frozenset(parse_filter_list(_read(uri, key))) if uri else frozenset()


def filter_list_fingerprint(uri: str, key: str) -> dict[str, Any]:
    """What a stage records of its filter list, so that editing the list (not only its path) reruns it."""
    if not uri:
        return {}
    entries = sorted(set(parse_filter_list(_read(uri, key))))
    digest = hashlib.sha256("\n".join(entries).encode()).hexdigest()
    return {"exclude": {"uri": uri, "entries": len(entries), "sha256": digest}}


def render_filter_list(entries: Iterable[tuple[str, str]], header: Iterable[str]) -> str:
    """A filter list's text: `header` lines as `# ` comments, then one `entry  # reason` line per entry."""
    lines = [f"# {line}".rstrip() for line in header]
    lines += [f"{entry}  # {reason}" if reason else entry for entry, reason in entries]
    return "\n".join(lines) + "\n"


def _read(uri: str, key: str) -> str:
    try:
        return read_uri_text(uri)
    except FileNotFoundError:
        raise ConfigError(f"{key}: the filter list {uri} does not exist") from None
    except (OSError, StoreError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"{key}: cannot read the filter list {uri} ({error})") from None
