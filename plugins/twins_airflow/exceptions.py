"""One failure mapping for every task of the DAG, operators and ``@task`` functions alike.

``twins_tasks`` raises errors written for the reader; here they become task failures:

- :class:`~twins_tasks.errors.InputError` (a wrong path, Param, checkpoint, dataset): :class:`TwinsInputError`,
  an ``AirflowFailException``, so the task fails at once without using up its retries (they cannot help, and
  with ``max_active_runs=1`` they would hold up the next run);
- any other :class:`~twins_tasks.errors.TwinsError` (a tool failed, outputs missing, device busy):
  :class:`TwinsTaskError`, an ``AirflowException`` that keeps the tool's last lines, so retries apply.

The exception is raised ``from None``: the task log shows the reader's message once, as the failure's own line,
not a second chained traceback repeating it. Anything else is a bug and propagates unchanged, with its full
traceback.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from twins_tasks.errors import InputError, ToolError, TwinsError

F = TypeVar("F", bound=Callable[..., Any])


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
