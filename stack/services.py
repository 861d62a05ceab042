"""The application services that ``make up`` runs on the local stack."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from config.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_dir() -> Path:
    """Where ``make up`` keeps data, logs and pid files (``IM_RUN_DIR``)."""
    return Path(os.environ.get("IM_RUN_DIR", REPO_ROOT / ".run" / "stack")).resolve()


@dataclass(frozen=True)
class AppService:
    """One MM-IM process: how to run it, where it listens, how to tell it is healthy."""

    name: str
    module: str
    env: dict[str, str] = field(default_factory=dict)
    address: str = ""
    health_url: str = ""


def local_services(settings: Settings) -> list[AppService]:
    """Dispatcher, the Faust worker, two connectors and the push service.

    Ports come from the settings; the second connector takes the next ports up.
    """

    def http(port: int) -> tuple[str, str]:
        return f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/healthz"

    services = [
        AppService(
            "dispatcher",
            "dispatcher",
            {"IM_DISPATCHER_PORT": str(settings.dispatcher_port)},
            *http(settings.dispatcher_port),
        ),
        AppService(
            "logic",
            "stream_logic",
            {"IM_LOGIC_WEB_PORT": str(settings.logic_web_port)},
            *http(settings.logic_web_port),
        ),
    ]
    for index in (0, 1):
        tcp_port = settings.connector_port + index
        http_port = settings.connector_http_port + index
        services.append(
            AppService(
                f"connector-c{index + 1}",
                "connector",
                {
                    "IM_CONNECTOR_ID": f"c{index + 1}",
                    "IM_CONNECTOR_PORT": str(tcp_port),
                    "IM_CONNECTOR_HTTP_PORT": str(http_port),
                },
                f"tcp://127.0.0.1:{tcp_port}",
                http(http_port)[1],
            )
        )
    services.append(
        AppService(
            "push", "push", {"IM_PUSH_PORT": str(settings.push_port)}, *http(settings.push_port)
        )
    )
    return services
