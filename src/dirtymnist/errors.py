"""The one exception type the CLI turns into a one-line message (no traceback)."""


class DirtyMnistError(Exception):
    """A user-facing problem: bad input, mismatched files, impossible request.

    The message must fit on one line and name the file and what is wrong.
    """


class DataError(DirtyMnistError):
    """A data file or folder is missing or malformed."""


class ConfigError(DirtyMnistError):
    """A configuration is invalid or does not match a checkpoint."""
