"""The base class of the data loaders' errors, which the CLI reports as one line."""


class DataError(ValueError):
    """A missing, corrupt or unreadable data file; the message names it and the problem."""
