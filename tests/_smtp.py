"""A real SMTP server for the notification tests (aiosmtpd, on a free local port), loaded as a conftest plugin.

``smtp_server`` gives an :class:`Inbox`: the mails it received (parsed), a way to wait for them, and the
``twins_notify_smtp`` Connection (URI-less JSON form, no TLS) that points Airflow at it.
"""

from __future__ import annotations

import contextlib
import email
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest

RECIPIENTS = ("nightly@example.com", "oncall@example.com")
SENDER = "airflow@example.com"


class Inbox:
    """Mails received, in order; :meth:`wait_for` blocks until one matches (no polling sleeps)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.mails: list[EmailMessage] = []
        self._changed = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's handler hook
        mail = email.message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(mail, EmailMessage)
        with self._changed:
            self.mails.append(mail)
            self._changed.notify_all()
        return "250 OK"

    def wait_for(self, matches: Callable[[EmailMessage], bool], timeout_s: float = 60.0) -> EmailMessage:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                found = [m for m in self.mails if matches(m)]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    subjects = [m["Subject"] for m in self.mails]
                    raise AssertionError(f"no such mail within {timeout_s:.0f} s; received: {subjects}")
                self._changed.wait(left)

    def with_subject(self, text: str) -> list[EmailMessage]:
        return [m for m in self.mails if text in str(m["Subject"])]

    def connection(self, **extra: Any) -> str:
        """The ``twins_notify_smtp`` Connection as an ``AIRFLOW_CONN_…`` value."""
        return json.dumps(
            {
                "conn_type": "smtp",
                "host": self.host,
                "port": self.port,
                "extra": {
                    "to": ", ".join(RECIPIENTS),
                    "from_email": SENDER,
                    "disable_tls": True,
                    "disable_ssl": True,
                    "retry_limit": 0,
                    "timeout": 10,
                    **extra,
                },
            }
        )


def plain(mail: EmailMessage) -> str:
    return mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def html(mail: EmailMessage) -> str:
    return mail.get_body(("html",)).get_content()  # type: ignore[union-attr]


def assert_verdict_table(text: str, details: dict[str, Any]) -> None:
    """The mail's plain text shows each check the regression check recorded as a row of its batch size's table."""
    assert details["checks"], details
    columns = ("metric", "reference", "new", "change", "allowed", "noise", "verdict")
    for check in details["checks"]:
        section = text[text.index(f"\nbs{check['batch_size']}\n") :].split("\n\n")[0].splitlines()
        assert section[2].split() == list(columns), section
        cells = " ".join(str(check[k] or "-") for k in columns).split()
        assert any(line.split() == cells for line in section[4:]), (cells, section)


@contextlib.contextmanager
def serve_smtp() -> Iterator[Inbox]:
    """An SMTP server on a free local port for the block (a deployment's whole life, in test_deploy.py)."""
    from aiosmtpd.controller import Controller

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inbox = Inbox("127.0.0.1", port)
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[Inbox]:
    with serve_smtp() as inbox:
        yield inbox
