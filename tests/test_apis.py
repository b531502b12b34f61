import pytest

from shared.normalize.apis import api_version, classify, deployment_for, version_at_least


@pytest.mark.parametrize(
    ("path", "api", "deployment", "surface"),
    [
        ("/openai/deployments/gpt-4o/chat/completions", "chat.completions", "gpt-4o", "deployments"),
        ("/openai/deployments/instruct/completions", "completions", "instruct", "deployments"),
        ("/openai/deployments/ada/embeddings", "embeddings", "ada", "deployments"),
        ("/openai/deployments/dalle/images/generations", "images.generations", "dalle", "deployments"),
        ("/openai/deployments/whisper/audio/transcriptions", "audio.transcriptions", "whisper", "deployments"),
        ("/openai/deployments/whisper/audio/translations", "audio.translations", "whisper", "deployments"),
        ("/openai/deployments/tts/audio/speech", "audio.speech", "tts", "deployments"),
        ("/openai/deployments/gpt-4o/extensions/chat/completions", "other", "gpt-4o", "deployments"),
        ("/openai/v1/chat/completions", "chat.completions", None, "v1"),
        ("/openai/v1/embeddings", "embeddings", None, "v1"),
        ("/openai/v1/responses", "responses", None, "v1"),
        ("/openai/responses", "responses", None, "v1"),
        ("/openai/v1/models", "models", None, "v1"),
        ("/openai/files/file-1/content", "files", None, "v1"),
        ("/openai/v1/batches/batch_1/cancel", "batches", None, "v1"),
    ],
)
def test_classify(path, api, deployment, surface):
    route = classify(path)
    assert (route.api, route.deployment, route.surface) == (api, deployment, surface)


def test_response_id_paths():
    assert classify("/openai/v1/responses/resp_123").response_id == "resp_123"
    assert classify("/openai/responses/resp_1/input_items").response_id == "resp_1"


@pytest.mark.parametrize("path", ["/", "/other/thing", "/openai/deployments/", "/openai/deployments//chat/completions"])
def test_malformed_paths(path):
    assert classify(path) is None


def test_deployment_from_body_on_v1():
    assert deployment_for(classify("/openai/v1/responses"), {"model": "gpt-4o"}) == "gpt-4o"
    assert deployment_for(classify("/openai/v1/responses"), [1, 2]) is None
    assert deployment_for(classify("/openai/deployments/x/embeddings"), {"model": "y"}) == "x"


def test_versions():
    assert api_version({"api-version": "2024-10-21"}) == "2024-10-21"
    assert version_at_least("2024-10-21", "2024-09-01-preview")
    assert not version_at_least("2024-06-01", "2024-09-01-preview")
    assert version_at_least("2024-09-01-preview", "2024-09-01-preview")
    assert version_at_least("preview", "2024-09-01-preview")
    assert not version_at_least(None, "2024-09-01")
