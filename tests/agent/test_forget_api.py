"""Forget with weights through HTTP: chat is answered throughout the replay, on the old weights until the switch."""

from __future__ import annotations

import httpx
import pytest

from tests.agent.conftest import served
from tests.agent.server import until

SECRET = b"The vault code is 7316-4482 and only the night porter knows it.\n"
OTHER = [b"The keeper logs every storm with the hour and the height of the waves.\n",
         b"Tides come twice a day; the tables are posted on the board by the quay.\n"]


@pytest.fixture(scope="module", params=["embedded", "redis"])
def deployment(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"forget-{request.param}")
    # Small chunks (several events a document) and a pause after each replayed event: chat lands mid-replay.
    env = {"LIFELONG_DATA_DIR": str(root / "data"), "LIFELONG_BASE_CHECKPOINT": "preset:tiny",
           "LIFELONG_CHUNK_BYTES": "64", "LIFELONG_MAX_REPLY_BYTES": "16", "LIFELONG_TEST_FORGET_EVENT_DELAY_S": "0.5",
           "LIFELONG_FORGET_CHECKPOINT_S": "0"}
    yield from served(request.param, root, env)


def _upload(client: httpx.Client, agent_id: int, data: bytes, name: str) -> int:
    response = client.post(f"/v1/agents/{agent_id}/documents", params={"name": name}, content=data,
                           headers={"Content-Type": "text/plain"})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_chat_is_answered_on_the_old_weights_until_the_replay_publishes(deployment):
    with deployment.client(deployment.admin_key) as client:
        agent = client.post("/v1/agents", json={"name": "ada", "learning": {"learning_rate": 0.05}}).json()
        agent_id = agent["id"]
        session_id = client.post(f"/v1/agents/{agent_id}/sessions").json()["id"]
        secret = _upload(client, agent_id, SECRET, "secret")
        for number, data in enumerate(OTHER):
            _upload(client, agent_id, data, f"other-{number}")
        assert client.post(f"/v1/sessions/{session_id}/messages", json={"content": "hello"}).status_code == 200
        until(lambda: client.get(f"/v1/agents/{agent_id}").json()["queue_lag"] == 0, "everything learned")
        before = client.get(f"/v1/agents/{agent_id}/weights").json()["data"][0]
        assert client.get(f"/v1/documents/{secret}").json()["status"] == "learned"
        assert len(before["sha256"]) == 64

        forgot = client.delete(f"/v1/agents/{agent_id}/memories", params={"document_id": secret})
        assert forgot.status_code == 200, forgot.text
        job = forgot.json()["job"]
        assert forgot.json()["deleted"] >= 1 and job["status"] == "queued"
        assert client.get(f"/v1/agents/{agent_id}/memories", params={"document_id": secret}).json()["data"] == []
        assert client.get(f"/v1/documents/{secret}").json()["status"] == "forgotten"  # not "learned" any more

        versions_seen, progress = [], []
        while job["status"] in ("queued", "replaying"):
            turn = client.post(f"/v1/sessions/{session_id}/messages", json={"content": "what is the code?"})
            assert turn.status_code == 200, turn.text  # answered throughout, never a 5xx
            job = client.get(f"/v1/agents/{agent_id}/forget-jobs/{job['id']}").json()
            versions_seen.append((turn.json()["weight_version"], job["status"]))
            progress.append(job["bytes_done"])
        assert job["status"] == "done", job
        assert job["bytes_done"] == job["bytes_total"] > 0 and progress == sorted(progress)
        # Every turn answered while the job was still running had the old weights.
        assert {version for version, status in versions_seen if status != "done"} == {before["version"]}
        assert len(versions_seen) >= 2

        after = client.get(f"/v1/agents/{agent_id}/weights").json()["data"]
        published = next(v for v in after if v["version"] == job["result_version"])
        assert published["sha256"] != before["sha256"]
        # No kept version learned the forgotten document, so no rollback can bring it back.
        assert before["version"] not in [v["version"] for v in after]
        turn = client.post(f"/v1/sessions/{session_id}/messages", json={"content": "and now?"}).json()
        assert turn["weight_version"] >= job["result_version"]
        # The turns said during the replay are learned after it, on top of its result.
        until(lambda: client.get(f"/v1/agents/{agent_id}").json()["queue_lag"] == 0, "the later turns learned")
        assert client.get(f"/v1/agents/{agent_id}/weights").json()["data"][0]["version"] > job["result_version"]

        for bad in ({"all": "true", "weights": "true"}, {"document_id": secret, "event_id": 1}):
            refused = client.delete(f"/v1/agents/{agent_id}/memories", params=bad)
            assert refused.status_code == 422, refused.text
        assert client.get(f"/v1/agents/{agent_id}/forget-jobs/{2**40}").status_code == 404
