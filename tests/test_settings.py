"""Settings come from the environment under one prefix per service, and bad ones fail loudly."""

from __future__ import annotations

import pytest
from pydantic_settings import SettingsConfigDict

from geoloc.common.paths import CHECKOUT
from geoloc.common.settings import ServerSettings, SettingsError, load_settings


class GallerySettings(ServerSettings):
    model_config = SettingsConfigDict(env_prefix="GEOLOC_TESTGALLERY_")


def test_values_come_from_the_environment_under_the_service_prefix(monkeypatch):
    monkeypatch.setenv("GEOLOC_TESTGALLERY_PORT", "6000")
    monkeypatch.setenv("GEOLOC_TESTGALLERY_MAX_RECEIVE_MESSAGE_BYTES", "1048576")
    monkeypatch.setenv("GEOLOC_TESTGALLERY_METRICS_PORT", "none")  # metrics disabled
    monkeypatch.setenv("GEOLOC_PORT", "7000")  # another prefix: must not leak in
    settings = load_settings(GallerySettings)
    assert settings.port == 6000
    assert settings.max_receive_message_bytes == 1048576
    assert settings.metrics_port is None
    assert settings.address == "127.0.0.1:6000"
    assert ServerSettings().max_receive_message_bytes == 20 * 1024 * 1024
    assert GallerySettings.model_config["frozen"] and GallerySettings.model_config["extra"] == "ignore"


def test_invalid_values_raise_an_error_naming_each_variable(monkeypatch):
    monkeypatch.setenv("GEOLOC_TESTGALLERY_PORT", "70000")
    monkeypatch.setenv("GEOLOC_TESTGALLERY_LOG_LEVEL", "loud")
    with pytest.raises(SettingsError) as error:
        load_settings(GallerySettings)
    message = str(error.value)
    assert "GEOLOC_TESTGALLERY_PORT=" in message and "70000" in message
    assert "GEOLOC_TESTGALLERY_LOG_LEVEL=" in message and "loud" in message


def test_overrides_win_and_are_validated_too():
    assert load_settings(GallerySettings, port=0).port == 0
    with pytest.raises(SettingsError, match="grace_period_s"):
        load_settings(GallerySettings, grace_period_s=-1)


def test_the_readme_documents_every_setting_of_every_service():

    from geoloc.embedding.config import EmbeddingSettings
    from geoloc.gallery.config import GallerySettings
    from geoloc.judge.config import JudgeSettings
    from geoloc.orchestrator.config import OrchestratorSettings
    from geoloc.sampler.config import SamplerSettings
    from geoloc.text.config import TextSettings
    from geoloc.tokens.config import TokensSettings

    readme = (CHECKOUT / "README.md").read_text()
    for settings_class in (
        ServerSettings,
        EmbeddingSettings,
        GallerySettings,
        SamplerSettings,
        TokensSettings,
        TextSettings,
        JudgeSettings,
        OrchestratorSettings,
    ):
        missing = [name for name in settings_class.model_fields if f"| `{name.upper()}` |" not in readme]
        assert not missing, f"README's configuration reference lacks {settings_class.__name__}'s {missing}"


def test_the_embedding_service_refuses_a_photo_limit_its_messages_could_never_carry(monkeypatch):
    from geoloc.embedding.config import EmbeddingSettings

    monkeypatch.setenv("GEOLOC_EMBEDDING_MAX_IMAGE_BYTES", str(30 * 1024 * 1024))
    with pytest.raises(SettingsError, match="max_image_bytes must be below max_receive_message_bytes"):
        load_settings(EmbeddingSettings)
