"""The one base class of every error a user can cause (a bad flag value, a missing input, an output made otherwise).

Each module raises its own subclass (``DataError``, ``RegistryError``, ``JsonlError``, ``MissingInputError``,
``StaleOutputError``, ``GenerationError``, ``SFTError``); the scripts' ``cli.main_guard`` catches ``AliceError`` and
prints its one-line message instead of a traceback (exit status 2). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AliceError(Exception):
    """An error a user can fix; the message says how."""
