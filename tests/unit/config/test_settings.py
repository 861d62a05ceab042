import pytest

from config.settings import Settings, describe_errors, load_settings


def test_defaults_point_at_the_local_stack() -> None:
    settings = Settings()
    assert settings.kafka_bootstrap == "127.0.0.1:19092"
    assert settings.redis_url == "redis://127.0.0.1:16379/0"
    assert settings.mysql_port == 13306
    assert settings.max_frame_bytes == 64 * 1024


def test_environment_overrides_with_im_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IM_CONNECTOR_PORT", "7555")
    assert Settings().connector_port == 7555


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("IM_MYSQL_PORT", "not-a-port"),
        ("IM_MYSQL_PORT", "70000"),
        ("IM_JWT_SECRET", "too-short"),
        ("IM_ARCHIVE_BACKEND", "postgres"),
        ("IM_HEARTBEAT_TIMEOUT_S", "5"),  # not above the 20 s interval
    ],
)
def test_bad_value_stops_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    load_settings.cache_clear()
    with pytest.raises(SystemExit) as exit_info:
        load_settings()
    load_settings.cache_clear()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid configuration" in err
    if variable != "IM_HEARTBEAT_TIMEOUT_S":
        assert variable in err
    else:
        assert "IM_HEARTBEAT_TIMEOUT_S must be greater" in err


def test_production_refuses_the_development_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IM_ENV", "production")
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as error:
        Settings()
    assert "IM_JWT_SECRET must be set" in describe_errors(error.value)
