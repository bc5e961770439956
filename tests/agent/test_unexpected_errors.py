"""A failure no handler expected is a 500 in the error shape, and the client's keep-alive connection stays
usable: a pooled client's next request must not fail because an earlier one did. Over real HTTP (uvicorn)."""

from __future__ import annotations

import threading
import time

import httpx
import uvicorn
from fastapi import FastAPI

from agent.errors import install_error_handlers
from bench.deployment import free_port


def test_a_500_answers_in_the_error_shape_and_keeps_the_connection():
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/fails")
    def fails() -> None:
        raise RuntimeError("a bug")

    @app.get("/works")
    def works() -> dict:
        return {"ok": True}

    server = uvicorn.Server(uvicorn.Config(app, port=free_port(), log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}", timeout=10) as client:
            failed = client.get("/fails")
            assert failed.status_code == 500 and failed.json()["error"]["code"] == "internal_error"
            assert "a bug" not in failed.text  # the exception stays in the log
            assert failed.headers.get("connection") != "close"
            assert client.get("/works").json() == {"ok": True}  # on the same pooled connection
            assert len(client._transport._pool.connections) == 1
    finally:
        server.should_exit = True
        thread.join(timeout=10)
