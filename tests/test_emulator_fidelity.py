"""Where the emulator follows the upstream's wire more closely than a Django route would by default, driven by the
official SDK (anthropic 2.10.0) over real HTTP: ids with an encoded ``/`` stay in their path segment, and
environments belong to a workspace."""

from __future__ import annotations

import anthropic
import pytest


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch):
    for name in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_CUSTOM_HEADERS",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def api(emulator):
    with anthropic.Anthropic(
        api_key=emulator.api_key, base_url=emulator.base_url, _strict_response_validation=True, max_retries=0
    ) as client:
        yield client


@pytest.fixture
def env(emulator):
    environment, key = emulator.create_environment("fidelity")
    return environment["id"], key


def test_an_update_of_id_slash_stop_answers_404_and_stops_nothing(emulator, env, api):
    env_id, _ = env
    item_id = emulator.enqueue(env_id, metadata={"owner": "ops"})["id"]

    with pytest.raises(anthropic.NotFoundError) as caught:
        api.beta.environments.work.update(f"{item_id}/stop", environment_id=env_id, metadata={"owner": "x"})

    assert caught.value.status_code == 404
    assert caught.value.request.url.raw_path.decode().endswith(f"/work/{item_id}%2Fstop")
    item = api.beta.environments.work.retrieve(item_id, environment_id=env_id)
    assert item.state == "queued"
    assert item.stop_requested_at is None and item.stopped_at is None
    assert item.metadata == {"owner": "ops"}
    served = emulator.requests()["by_route"]
    assert served.get("update") == 1 and "stop" not in served, served


def test_a_retrieve_of_an_id_with_an_encoded_slash_is_not_found_and_names_the_whole_id(emulator, env, api):
    env_id, _ = env
    item_id = emulator.enqueue(env_id)["id"]

    with pytest.raises(anthropic.NotFoundError) as caught:
        api.beta.environments.work.retrieve(f"{item_id}/ack", environment_id=env_id)

    assert f"{item_id}/ack" in str(caught.value.api_message)
    assert api.beta.environments.work.retrieve(item_id, environment_id=env_id).state == "queued"


def test_a_workspace_header_naming_another_workspace_is_refused(api, emulator, env):
    env_id, _ = env
    work_id = emulator.enqueue(env_id)["id"]
    own = api.beta.environments.work.retrieve(
        work_id, environment_id=env_id, workspace_id="wrkspc_01EmulatorDefault"
    )
    assert own.id == work_id
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        api.beta.environments.work.retrieve(
            work_id, environment_id=env_id, workspace_id="wrkspc_01SomebodyElse"
        )
    # Errors carry the credential's workspace as the SDK reads it.
    assert refused.value.workspace_id == "wrkspc_01EmulatorDefault"
    assert "workspace" in refused.value.message
    with pytest.raises(anthropic.PermissionDeniedError):
        api.beta.environments.work.stats(env_id, workspace_id="wrkspc_01SomebodyElse")
    with pytest.raises(anthropic.PermissionDeniedError):
        api.beta.environments.work.update(
            work_id, environment_id=env_id, metadata={"k": "v"}, workspace_id="wrkspc_01SomebodyElse"
        )
    assert api.beta.environments.work.retrieve(work_id, environment_id=env_id).metadata == {}


def test_environments_of_another_workspace_are_not_the_api_keys(api, emulator, env):
    env_id, _ = env
    other, other_key = emulator.create_environment("elsewhere", workspace_id="wrkspc_01SomebodyElse")
    listed = [e.id for e in api.beta.environments.list()]
    assert env_id in listed and other["id"] not in listed
    with pytest.raises(anthropic.NotFoundError) as missing:
        api.beta.environments.work.stats(other["id"])
    assert missing.value.workspace_id == "wrkspc_01EmulatorDefault"
    # The environment's own key belongs to its workspace.
    with anthropic.Anthropic(auth_token=other_key, base_url=emulator.base_url, max_retries=0) as worker:
        assert worker.beta.environments.work.stats(other["id"]).depth == 0
        with pytest.raises(anthropic.PermissionDeniedError):
            worker.beta.environments.work.stats(other["id"], workspace_id="wrkspc_01EmulatorDefault")
