"""The errors a user's own input causes, which the command lines print as one line."""

import difflib
from typing import Sequence


class ConfigError(ValueError):
    """A config field holds a value the experiment cannot run with."""


class WorkdirError(ValueError):
    """A work directory cannot be used for the requested run (e.g. it holds another experiment)."""


class SweepError(ValueError):
    """A sweep file, or the run of a sweep asked for, is not usable as it is."""


def did_you_mean(name: str, choices) -> str:
    """` (did you mean 'x'?)` for the choice closest to `name`, or "" when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def first_few(items: Sequence[str], count: int, separator: str = ", ") -> str:
    """The first `count` of `items` (in their order) joined by `separator`, then
    " and N more" when there are more: how a one-line message names a long list."""
    rest = len(items) - count
    return separator.join(items[:count]) + (f" and {rest} more" if rest > 0 else "")
