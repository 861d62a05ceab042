from pathlib import Path

from config.settings import Settings

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def test_every_setting_is_documented() -> None:
    text = DOC.read_text()
    missing = [
        f"IM_{name.upper()}" for name in Settings.model_fields if f"`IM_{name.upper()}`" not in text
    ]
    assert not missing, f"add these to docs/configuration.md: {missing}"
