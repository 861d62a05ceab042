"""Export the dispatcher's OpenAPI spec: ``python -m dispatcher.openapi [path]``.

The committed copy, docs/openapi/dispatcher.json, is what client authors read; a unit
test fails when it no longer matches the app.
"""

from __future__ import annotations

from typing import Any

from config.settings import Settings
from dispatcher.app import create_app
from schemas.http import OPENAPI_DIR, export_spec

SPEC_PATH = OPENAPI_DIR / "dispatcher.json"


def current_spec() -> dict[str, Any]:
    """The OpenAPI document of the app as the code defines it now."""
    # The spec does not depend on configuration values, so defaults will do.
    return create_app(Settings()).openapi()


def main() -> None:
    export_spec(current_spec, SPEC_PATH)


if __name__ == "__main__":
    main()
