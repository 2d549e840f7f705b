"""Errors caused by what the user gave us (files, options, data): the CLI prints them on one line
and exits with code 2, without a traceback."""


class InputError(ValueError):
    """Bad user input; the message names the file/option and what is wrong."""


class RunsFailed(RuntimeError):
    """Some runs failed; the others finished. The message lists each failure and its log."""
