"""One failure mapping for every task of the DAG, operators and ``@task`` functions alike.

``twins_tasks`` raises errors written for the reader; here they become task failures:

- :class:`~twins_tasks.errors.InputError` (a wrong path, Param, checkpoint, dataset): :class:`TwinsInputError`,
  an ``AirflowFailException``, so the task fails at once without using up its retries (they cannot help, and
  with ``max_active_runs=1`` they would hold up the next run);
- any other :class:`~twins_tasks.errors.TwinsError` (a tool failed, outputs missing, device busy):
  :class:`TwinsTaskError`, an ``AirflowException`` that keeps the tool's last lines, so retries apply.

A bad input's message comes first and whole: it is logged at ERROR before the exception is raised, so the task
log shows it above Airflow's "Task failed with exception" and its traceback (a dozen frames of Airflow's own code,
ending with the message again in one long line that the log pane cuts). The UI's log view does not wrap, its pane
beside the graph shows about 35 characters past the line's time and level, and a message's further lines start
under its first: a short first line says what failed, the message follows in short lines. (A tool's failure comes
after the tool's own lines, which the log shows as they are printed.) The exception is raised ``from None``: no
second, chained traceback repeats it. Anything else is a bug and propagates unchanged, with its full traceback.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from twins_tasks.errors import InputError, ToolError, TwinsError
from twins_tasks.report import wrap_text

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)


class TwinsInputError(AirflowFailException):
    """Bad input: the task fails without retries; the message says what to fix."""


class TwinsTaskError(AirflowException):
    """A step failed in a way a retry may fix; ``lines`` keeps the tool's last output lines, if a tool ran."""

    def __init__(self, message: str, *, lines: list[str] | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.lines = lines or []
        self.exit_code = exit_code


@contextlib.contextmanager
def task_failures() -> Iterator[None]:
    """Turn ``twins_tasks`` errors raised inside the block into the task failures above."""
    try:
        yield
    except InputError as exc:
        log.error("bad input (not retried):\n%s", wrap_text(str(exc)))
        raise TwinsInputError(f"bad input (not retried): {exc}") from None
    except ToolError as exc:
        raise TwinsTaskError(str(exc), lines=exc.lines, exit_code=exc.exit_code) from None
    except TwinsError as exc:
        raise TwinsTaskError(str(exc)) from None


def maps_failures(func: F) -> F:
    """Decorator for ``@task`` functions: :func:`task_failures` around the body (signature kept for Airflow)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with task_failures():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
