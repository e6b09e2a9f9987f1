"""Issue 14, `matebit serve`: item 10 (a busy port) and item 14 (Host and Origin checked: DNS rebinding)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from hostile_helpers import free_port, http_get, start_server
from matebit.cli import run


# -- 10: a busy port --------------------------------------------------------------------------------------------


def test_item10_a_busy_port_is_one_line_suggesting_port(tiny_model, capsys, monkeypatch):
    monkeypatch.delenv("MATEBIT_DEBUG", raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        start = time.monotonic()
        code = run(["serve", "--model", str(tiny_model), "--port", str(port), "--device", "cpu"])
        took = time.monotonic() - start
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and str(port) in lines[0] and "--port" in lines[0], err
    assert "GRADIO_SERVER_PORT" not in err
    assert took < 5, took  # said before the model or gradio is loaded


# -- 14: Host and Origin ------------------------------------------------------------------------------------------


def test_item14_allowed_hosts_and_the_check():
    from matebit.app import allowed_hosts, host_permitted

    local = allowed_hosts("127.0.0.1", 7860)
    assert {"127.0.0.1:7860", "localhost:7860", "[::1]:7860"} <= local
    assert host_permitted("127.0.0.1:7860", None, local)
    assert host_permitted("LOCALHOST:7860", "http://localhost:7860", local)
    for host, origin in [("evil.example", None), ("evil.example:7860", None), ("127.0.0.1:7861", None),
                         (None, None), ("127.0.0.1:7860", "http://evil.example"), ("127.0.0.1:7860", "null"),
                         ("127.0.0.1:7860", "file://127.0.0.1:7860")]:
        assert not host_permitted(host, origin, local), (host, origin)
    lan = allowed_hosts("192.168.1.20", 80, extra=["demo.lan"])
    assert host_permitted("192.168.1.20", None, lan) and host_permitted("demo.lan:80", None, lan)
    assert not host_permitted("localhost:80", None, lan)


def test_item14_the_middleware_answers_403_and_passes_the_rest():
    from matebit.app import HostCheck, allowed_hosts

    reached = []

    async def app(scope, receive, send):
        reached.append(scope["type"])

    def call(scope_type: str, headers: dict[str, str]) -> list[dict]:
        sent = []

        async def send(message):
            sent.append(message)

        scope = {"type": scope_type, "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
        asyncio.run(HostCheck(app, allowed_hosts("127.0.0.1", 7860))(scope, None, send))
        return sent

    assert call("http", {"host": "evil.example"})[0]["status"] == 403
    assert call("websocket", {"host": "127.0.0.1:7860", "origin": "http://evil.example"})[0]["code"] == 1008
    assert call("http", {"host": "127.0.0.1:7860", "origin": "http://127.0.0.1:7860"}) == []
    assert reached == ["http"]
    asyncio.run(HostCheck(app, [])({"type": "lifespan"}, None, None))
    assert reached == ["http", "lifespan"]


@pytest.mark.slow
def test_item14_a_real_server_refuses_foreign_host_and_origin_headers(tiny_model, tmp_path):
    pytest.importorskip("gradio")
    port = free_port()
    proc = start_server(["--model", tiny_model, "--device", "cpu"], tmp_path, port)
    try:
        assert http_get(port, f"localhost:{port}") == 200
        assert http_get(port, "evil.example") == 403
        assert http_get(port, f"evil.example:{port}") == 403
        assert http_get(port, f"127.0.0.1:{port}", origin="http://evil.example") == 403
        assert http_get(port, "evil.example", path="/gradio_api/info") == 403
        assert http_get(port, f"127.0.0.1:{port}", origin=f"http://127.0.0.1:{port}") == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
