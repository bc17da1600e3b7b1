"""One exception type for every problem a user can fix: the CLI prints its message on one line and exits non-zero."""


class KnowpackError(Exception):
    """A user-facing error. The message names the input and the problem, in one line, without a traceback."""

    exit_code = 2


class InputError(KnowpackError):
    """A file, model, config or folder given by the user is missing, unreadable or malformed."""


class RunConflictError(KnowpackError):
    """An output folder holds a run made with another configuration or other inputs."""
