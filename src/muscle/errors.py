"""User-facing errors.

Library code raises :class:`MuscleError` for mistakes the user can fix (a missing
file, a bad field name, mismatching tokenizers).  The CLI prints its message as a
single line and exits with code 2; no traceback.
"""

from __future__ import annotations


class MuscleError(Exception):
    """A user mistake: the message says what, where, and how to fix it."""

    exit_code = 2


class GateFailed(Exception):
    """A release gate (e.g. ``--max-nfr``) was not met: exit code 1."""

    exit_code = 1
