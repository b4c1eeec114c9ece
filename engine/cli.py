"""What every command line of the project shares: argparse that reports a bad command line in one
line, and the one error boundary that turns the project's errors into one `error:` line and an
exit code (engine/errors.py). Torch-free: the dashboard's and the grid's commands use it too.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn

from engine.errors import InputError, StateError

INTERRUPTED = "interrupted: nothing half-written was left; run the same command again to continue"


class Parser(argparse.ArgumentParser):
    """argparse, with a bad command line reported in one `error:` line (not usage + error), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def error_line(err: BaseException) -> str:
    """The one line a command prints for `err`: an OSError with its path, cause and what to do."""
    if isinstance(err, OSError):
        from engine.fsutil import describe_os_error

        return describe_os_error(err)
    return str(err)


def error_boundary(command: Callable[[], object], interrupted: str = INTERRUPTED) -> int:
    """Run `command` and return its exit code: the int it returns, else 0; 2 for an `InputError` or a
    path that does not exist (FileNotFoundError), 1 for a `StateError` or another OSError, 130 for Ctrl-C; each error printed as one `error:` line on stderr
    (a listing of several problems keeps its lines). Any other exception is a bug: it propagates
    with its traceback."""
    try:
        result = command()
        return result if isinstance(result, int) else 0
    except (InputError, FileNotFoundError) as err:
        code, text = 2, error_line(err)
    except (StateError, OSError) as err:
        code, text = 1, error_line(err)
    except KeyboardInterrupt:
        print(f"\n{interrupted}", file=sys.stderr, flush=True)
        return 130
    print(f"error: {text}", file=sys.stderr, flush=True)
    return code
