"""Errors that name the thing that is wrong and what to do about it."""

from __future__ import annotations


class TwinsError(Exception):
    """Base class: the message is meant for the person reading the log or the terminal.

    ``exit_status`` is what the ``twins`` command exits with (as click's ``ClickException.exit_code``; named
    apart from :attr:`ToolError.exit_code`, the failed tool's own): the library only raises, the CLI maps every
    error in one place (:func:`twins_tasks.cli.main`).
    """

    exit_status = 1  # a step failed: a tool, missing outputs


class InputError(TwinsError):
    """Bad user input: a path, a flag value, a dataset, a checkpoint. Airflow fails such a task without retries."""

    exit_status = 2  # as argparse's usage errors


class CheckpointError(InputError):
    """A checkpoint that cannot be loaded into the model (missing/unexpected keys, wrong format)."""


class ParityError(TwinsError):
    """A backend disagrees with the PyTorch reference beyond tolerance."""


class ToolError(TwinsError):
    """An external tool (atc, ais_bench, npu-smi) failed; the message carries its own error lines."""

    def __init__(self, message: str, *, exit_code: int | None = None, lines: list[str] | None = None):
        super().__init__(message)
        self.exit_code = exit_code
        self.lines = lines or []


class MissingOutputError(TwinsError):
    """A step finished but the files it must produce are not all there."""
