"""Export the push service's OpenAPI spec: ``python -m push.openapi [path]``.

The committed copy, docs/openapi/push.json, is what the authors of calling services
read; a unit test fails when it no longer matches the app.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from config.settings import Settings
from push.app import create_app

SPEC_PATH = Path(__file__).resolve().parents[1] / "docs" / "openapi" / "push.json"


def current_spec() -> dict[str, Any]:
    """The OpenAPI document of the app as the code defines it now."""
    # The spec does not depend on configuration values, so defaults will do.
    return create_app(Settings()).openapi()


def render(spec: dict[str, Any]) -> str:
    return json.dumps(spec, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Write the spec to the given path (default docs/openapi/push.json)."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else SPEC_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(current_spec()))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
