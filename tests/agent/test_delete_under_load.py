"""Deleting an agent while its worker commits what it learned, or replays a forget: the delete answers 204
(or 503 with Retry-After, never a 500), the work stops at its next commit, and no row of the agent is left.

The worker's commit pauses inside its transaction with the agent's lock held (LIFELONG_TEST_LEARN_COMMIT_DELAY_S),
so the delete lands there every time: the case that deadlocked on PostgreSQL when the delete took the memory
rows before the agent's row, which the learner held while it waited for those rows.
"""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import func, select

from memory.db import make_engine
from memory.schema import (
    ApiKey,
    Document,
    Event,
    ForgetJob,
    Memory,
    StreamCheckpoint,
    StreamSession,
    WeightVersion,
)
from tests.agent.conftest import served
from tests.agent.server import until
from tests.dbs import held_by_a_writer

COMMIT_DELAY_S = 1.5
OWNED = (ApiKey, StreamSession, Event, Document, Memory, WeightVersion, StreamCheckpoint, ForgetJob)


@pytest.fixture(scope="module", params=["embedded", "redis"])
def deployment(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"delete-{request.param}")
    env = {"LIFELONG_DATA_DIR": str(root / "data"), "LIFELONG_BASE_CHECKPOINT": "preset:tiny",
           "LIFELONG_CHUNK_BYTES": "64", "LIFELONG_MAX_REPLY_BYTES": "16",
           "LIFELONG_TEST_LEARN_COMMIT_DELAY_S": str(COMMIT_DELAY_S), "LIFELONG_TEST_FORGET_EVENT_DELAY_S": "1",
           "LIFELONG_FORGET_CHECKPOINT_S": "0"}
    yield from served(request.param, root, env)


def _database_url(deployment) -> str:
    return deployment.env.get("LIFELONG_DATABASE_URL") or f"sqlite:///{deployment.data_dir / 'lifelong.db'}"


def _delete(client: httpx.Client, agent_id: int) -> list[int]:
    """DELETE the agent, again after each 503 (which must say when to retry); the statuses answered."""
    statuses = []
    for _ in range(10):
        response = client.delete(f"/v1/agents/{agent_id}")
        statuses.append(response.status_code)
        if response.status_code != 503:
            break
        assert response.headers.get("Retry-After"), response.text
        time.sleep(float(response.headers["Retry-After"]))
    return statuses


def _rows_left(engine, agent_id: int) -> dict[str, int]:
    with engine.connect() as connection:
        counts = {model.__tablename__: connection.scalar(
            select(func.count()).select_from(model).where(model.agent_id == agent_id)) for model in OWNED}
    return {table: count for table, count in counts.items() if count}


def _new_agent(client: httpx.Client, name: str) -> int:
    response = client.post("/v1/agents", json={"name": name, "learning": {"learning_rate": 0.05}})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_deleting_an_agent_while_its_learner_commits_answers_204_and_leaves_no_row(deployment):
    engine = make_engine(_database_url(deployment))
    try:
        with deployment.client(deployment.admin_key) as client:
            agent_id = _new_agent(client, "mid-learn")
            assert client.post("/v1/keys", json={"agent_id": agent_id}).status_code == 201
            session_id = client.post(f"/v1/agents/{agent_id}/sessions").json()["id"]
            turn = client.post(f"/v1/sessions/{session_id}/messages", json={"content": "remember the lighthouse"})
            assert turn.status_code == 200, turn.text
            until(lambda: held_by_a_writer(engine, agent_id), "the learner inside its commit", poll_s=0.05)
            statuses = _delete(client, agent_id)
            assert statuses[-1] == 204 and set(statuses) <= {204, 503}, statuses
            time.sleep(COMMIT_DELAY_S + 0.5)  # the learner's commit, and a redelivery's, have come and gone
            assert _rows_left(engine, agent_id) == {}
            assert client.get(f"/v1/agents/{agent_id}").status_code == 404
            assert client.get(f"/v1/sessions/{session_id}").status_code == 404
            # The worker goes on serving other agents.
            other = _new_agent(client, "after")
            other_session = client.post(f"/v1/agents/{other}/sessions").json()["id"]
            assert client.post(f"/v1/sessions/{other_session}/messages", json={"content": "hi"}).status_code == 200
            until(lambda: client.get(f"/v1/agents/{other}").json()["queue_lag"] == 0, "the other agent learned")
    finally:
        engine.dispose()


def test_deleting_an_agent_mid_forget_replay_answers_204_and_leaves_no_row(deployment):
    engine = make_engine(_database_url(deployment))
    try:
        with deployment.client(deployment.admin_key) as client:
            agent_id = _new_agent(client, "mid-replay")
            documents = []
            for number in range(5):  # one chunk event each (64-byte chunks)
                response = client.post(f"/v1/agents/{agent_id}/documents", params={"name": f"d{number}"},
                                       content=f"Note {number}: the tide table is on the quay.".encode())
                assert response.status_code == 202, response.text
                documents.append(response.json()["id"])
            until(lambda: client.get(f"/v1/agents/{agent_id}").json()["queue_lag"] == 0, "the documents learned")
            forgot = client.delete(f"/v1/agents/{agent_id}/memories", params={"document_id": documents[0]})
            assert forgot.status_code == 200, forgot.text
            job_id = forgot.json()["job"]["id"]
            until(lambda: client.get(f"/v1/agents/{agent_id}/forget-jobs/{job_id}").json()["status"] == "replaying",
                   "the replay running")
            statuses = _delete(client, agent_id)
            assert statuses[-1] == 204 and set(statuses) <= {204, 503}, statuses
            time.sleep(2.5)  # past the replay's next event and checkpoint (1 s apart)
            assert _rows_left(engine, agent_id) == {}
            assert client.get(f"/v1/agents/{agent_id}/forget-jobs/{job_id}").status_code == 404
    finally:
        engine.dispose()


def test_a_document_forgotten_before_it_is_learned_leaves_no_queue_lag(deployment):
    """Events forgotten before they were learned are never learned: the agent's queue_lag leaves them out (it
    counted them, and never reached 0)."""
    with deployment.client(deployment.admin_key) as client:
        agent_id = _new_agent(client, "forgot-early")
        document = client.post(f"/v1/agents/{agent_id}/documents", params={"name": "long"},
                               content=b"The harbour master keeps the tide tables by the quay. " * 20)
        assert document.status_code == 202, document.text
        # Each chunk's commit pauses COMMIT_DELAY_S: most of the document is still unlearned now.
        forgot = client.delete(f"/v1/agents/{agent_id}/memories", params={"document_id": document.json()["id"]})
        assert forgot.status_code == 200, forgot.text
        job = forgot.json()["job"]
        if job is not None:
            until(lambda: client.get(f"/v1/agents/{agent_id}/forget-jobs/{job['id']}").json()["status"] == "done",
                  "the forget job done")
        until(lambda: client.get(f"/v1/agents/{agent_id}").json()["queue_lag"] == 0, "queue_lag back to 0")
        with make_engine(_database_url(deployment)).connect() as connection:
            never_learned = connection.scalar(select(func.count()).select_from(Event).where(
                Event.agent_id == agent_id, Event.forgotten_at.is_not(None), Event.learned_at.is_(None)))
        assert never_learned > 0  # the case this test is about did happen
