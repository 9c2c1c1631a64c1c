"""The CLI's user-facing error (its own module: ``_common`` and
``_labels`` both raise it)."""

__all__ = ["CLIError"]


class CLIError(Exception):
    """An error reported to the user as one line (exit code 2)."""
