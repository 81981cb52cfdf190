"""One error type for everything a user can get wrong; the CLI prints it as a single line."""


class LtKitError(Exception):
    """A bad input (parameter, data, checkpoint, run dir) with a message that says what to do."""


class NonFiniteLossError(LtKitError):
    """The training loss became NaN or inf."""
