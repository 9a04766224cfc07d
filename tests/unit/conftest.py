"""The unit tier runs without PostgreSQL, Redis or Ray: any attempt to reach one fails."""

from __future__ import annotations

import socket
from typing import NoReturn

import psycopg
import pytest


class NetworkBlocked(RuntimeError):
    """A unit test tried to open a connection."""


def _blocked(*args: object, **kwargs: object) -> NoReturn:
    raise NetworkBlocked(f"unit tests must not open connections (args: {args!r})")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _blocked)
    monkeypatch.setattr(socket.socket, "connect_ex", _blocked)
    monkeypatch.setattr(socket, "create_connection", _blocked)
    monkeypatch.setattr(psycopg, "connect", _blocked)
    monkeypatch.setattr(psycopg.Connection, "connect", _blocked)
