"""The minimal client printed in docs/protocol.md works against a real pipeline, as written."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from client.sdk import Client

if TYPE_CHECKING:
    from tests.integration.conftest import Pipeline

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def minimal_client_source() -> str:
    section = DOC.read_text().split("## 12. A minimal client", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "docs/protocol.md lost its minimal client"
    return match.group(1)


async def test_the_documented_minimal_client_logs_in_and_gets_its_send_ack(
    pipeline: Pipeline, unique: Callable[[str], str]
) -> None:
    alice = unique("alice")
    account = Client(alice, "secret-password", dispatcher_url=pipeline.dispatcher_url)
    await account.register()
    await account.close(logout=False)
    source = minimal_client_source()
    # Point it at this pipeline and stop after the two replies (it loops forever as printed).
    for printed, ours in (
        ('base = "http://127.0.0.1:8080"', f'base = "{pipeline.dispatcher_url}"'),
        (
            '"user_id": "alice", "password": "secret"',
            f'"user_id": "{alice}", "password": "secret-password"',
        ),
        ("while True:", "for _ in range(2):"),
    ):
        assert printed in source, f"the doc's client no longer contains {printed!r}"
        source = source.replace(printed, ours)
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", source], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    login_ack, send_ack = result.stdout.splitlines()
    assert login_ack.startswith("2 1 ") and f"'user': '{alice}'" in login_ack
    assert send_ack.startswith("6 2 ") and "'client_msg_id': 'demo-1'" in send_ack
    assert "'seq': 1" in send_ack
