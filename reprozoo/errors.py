"""The one base class for problems a user can fix (a config key, a file, a full disk).

The CLI maps every `UserError` to one line, `reprozoo <stage>: error: <message>`, and
exit code 2 (reprozoo/cli.py, `main`); anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input or machine, reported as one line naming the file or key."""


class DiskFull(UserError, OSError):
    """No space left while writing an output (nothing half-written is left behind)."""


class ConfigError(UserError, ValueError):
    """A configuration problem, reported as one line naming the key."""


class DataError(UserError, RuntimeError):
    """Missing or malformed data, reported as one line naming the file or folder."""
