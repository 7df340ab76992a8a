"""One exception type for problems the user can fix; the CLI turns it into one line and exit 2."""

from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
    """Bad input: the message names the problem and how to fix it."""

    exit_code = 2


def did_you_mean(name: str, candidates: Iterable[str], prefix: str = "") -> str:
    """``"did you mean a, b? "`` for the close matches of ``name`` (empty when there are none):
    the one hint every unknown-name error gives."""
    import difflib

    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.5)
    return f"did you mean {', '.join(prefix + c for c in close)}? " if close else ""
