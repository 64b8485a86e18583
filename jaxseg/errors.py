"""The errors a user's own input causes, which the command lines print as one line."""

import difflib


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
