"""User-facing errors: raised for bad input, printed by the CLI as one line with exit code 2."""


class HarnessError(Exception):
    """A problem the user can fix; its message names the problem and the fix."""
