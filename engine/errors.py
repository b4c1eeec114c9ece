"""The project's two error families, which every command maps to one `error:` line and an exit code
(`engine.cli.error_boundary`).

- `InputError` (exit 2): what the user gave cannot be taken: a setting, a name, a file, an option.
  The message names the bad value and what is allowed.
- `StateError` (exit 1): the input is fine but the world is not as the command needs it: a lock
  is held, a folder holds another run or is damaged, a download failed, a tool failed. The message
  says what to do.

Every error class of engine/, experiments/ and dashboard/ derives from one of them; anything else
that escapes a command is a bug and keeps its traceback. Torch-free.
"""
from __future__ import annotations


class InputError(ValueError):
    """Input a command cannot take; the message names the value and what is allowed."""


class StateError(RuntimeError):
    """The input is fine, the world is not as the command needs it; the message says what to do."""
