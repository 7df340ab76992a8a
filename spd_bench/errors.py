"""One exception type for problems the user can fix; the CLI turns it into one line and exit 2."""


class UserError(Exception):
    """Bad input: the message names the problem and how to fix it."""

    exit_code = 2
