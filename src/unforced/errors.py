"""The one exception type for user errors: the CLI turns it into exit code 2 and one line."""


class UnforcedError(Exception):
    """Bad input from the user (config, data file, checkpoint, argument): the message names the problem."""
