"""User-facing errors.

A `SefarError` carries one line that names the file or value at fault and what to
do about it. The CLI prints it without a traceback (unless --debug) and exits 2.
"""


class SefarError(Exception):
    """An error the user can act on; its message is the whole story."""
