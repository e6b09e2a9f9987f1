"""Issue 35, "Unsafe": only PNG, JPEG, WebP, BMP, TIFF and GIF are ever decoded (matebit.io.IMAGE_FORMATS, checked
before Pillow picks a plugin); `serve` refuses files given by URL, bounds the upload route and its folder, and cleans
the folders of killed servers."""

from __future__ import annotations

import asyncio
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from hostile_helpers import edges, free_port, gradient, start_server
from round2_helpers import cli, dead_pid, error_line, refused

POSTSCRIPT = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\n%%EndComments\nshowpage\n"


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("MATEBIT_DEBUG", raising=False)


@pytest.fixture
def eps_opened(monkeypatch) -> list[str]:
    """Every file Pillow's EPS plugin is handed (it runs Ghostscript to decode)."""
    from PIL import EpsImagePlugin

    seen = []

    def _open(self):
        seen.append(str(getattr(self.fp, "name", self.fp)))
        raise SyntaxError("the EPS plugin was reached")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", _open)
    return seen


# -- the format allow-list --------------------------------------------------------------------------------------


def test_postscript_named_png_never_reaches_the_eps_plugin_through_the_cli(tiny_model, tmp_path, capsys, eps_opened):
    (tmp_path / "exemplar.png").write_bytes(POSTSCRIPT)
    Image.fromarray(edges(48, 40)).save(tmp_path / "s.png")
    line = refused(capsys, "translate", "--model", tiny_model, "--structure", tmp_path / "s.png", "--exemplar",
                   tmp_path / "exemplar.png", "--out", tmp_path / "o.png", "--device", "cpu")
    assert eps_opened == []
    assert "exemplar.png: not an image file matebit reads" in line, line


@pytest.mark.parametrize("name", ["photo.eps", "photo.png"])
def test_postscript_in_a_converter_folder_never_reaches_the_eps_plugin(tmp_path, capsys, eps_opened, name):
    src = tmp_path / "photos"
    src.mkdir()
    (src / name).write_bytes(POSTSCRIPT)
    Image.fromarray(gradient(40, 40)).save(src / "ok.png")
    code, _, err = cli(capsys, "prepare", "canny", src if name.endswith(".png") else src / name, tmp_path / "maps",
                       "--skip-errors", "--quiet")
    assert eps_opened == []
    assert code == 2 and "Traceback" not in err, err


def test_postscript_upload_never_reaches_the_eps_plugin(tmp_path, eps_opened):
    from matebit.app import Limits, UploadRefused, check_upload

    (tmp_path / "upload.png").write_bytes(POSTSCRIPT)
    with pytest.raises(UploadRefused, match="not an image"):
        check_upload(tmp_path / "upload.png", "Exemplar", Limits(), upload_root=tmp_path)
    assert eps_opened == []


def test_postscript_among_training_images_never_reaches_the_eps_plugin(synthetic_data, tmp_path, capsys,
                                                                        eps_opened):
    data = Path(shutil.copytree(synthetic_data, tmp_path / "data"))
    victim = sorted((data / "images").iterdir())[0]
    victim.write_bytes(POSTSCRIPT)
    line = refused(capsys, "train", "--preset", "tiny", "--data", data, "--out", tmp_path / "run", "--workers", "0",
                   "--quiet", "--set", "train.image_size=32", "--set", "train.steps=2")
    assert eps_opened == []
    assert victim.name in line and "not an image file matebit reads" in line, line


def test_other_formats_pillow_knows_are_refused_too(tiny_model, tmp_path, capsys):
    """A PPM named .png decodes with Pillow; matebit does not take it, whatever its name."""
    Image.fromarray(gradient(48, 40)).save(tmp_path / "exemplar.png", format="PPM")
    Image.fromarray(edges(48, 40)).save(tmp_path / "s.png")
    line = refused(capsys, "translate", "--model", tiny_model, "--structure", tmp_path / "s.png", "--exemplar",
                   tmp_path / "exemplar.png", "--out", tmp_path / "o.png", "--device", "cpu")
    assert "exemplar.png: not an image file matebit reads" in line, line


# -- serve: the upload route ------------------------------------------------------------------------------------


def _asgi(guard, headers: dict[str, str], method: str = "POST", path: str = "/gradio_api/upload") -> dict:
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": method, "path": path,
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(guard(scope, receive, send))
    return {"status": sent[0]["status"], "body": b"".join(m.get("body", b"") for m in sent[1:])} if sent else {}


def test_the_upload_guard_bounds_each_request_and_the_folder(tmp_path):
    from matebit.app import UploadGuard

    reached = []

    async def gradio(scope, receive, send):
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"[]"})

    (tmp_path / "old-upload").write_bytes(b"x" * 3000)
    guard = UploadGuard(gradio, tmp_path, max_request=2000, max_total=4000)
    assert _asgi(guard, {"content-length": "30000000"})["status"] == 413  # a 30 MB field: never read
    assert _asgi(guard, {})["status"] == 411
    assert _asgi(guard, {"content-length": "1500"})["status"] == 413  # 3000 held + 1500 > 4000
    assert reached == []
    assert _asgi(guard, {"content-length": "900"})["status"] == 200
    assert _asgi(guard, {"content-length": "900"}, path="/gradio_api/info", method="GET")["status"] == 200
    assert len(reached) == 2


def test_a_form_gradio_cannot_take_is_400_not_500(tmp_path):
    from matebit.app import UploadGuard

    async def gradio(scope, receive, send):  # what gradio's upload route does with a non-file "files" field
        raise TypeError("File is not an instance of GradioUploadFile")

    reply = _asgi(UploadGuard(gradio, tmp_path, max_request=10**6, max_total=10**7), {"content-length": "100"})
    assert reply["status"] == 400 and b"not a file upload" in reply["body"]


@pytest.mark.parametrize("payload", [
    {"path": "http://127.0.0.1:9/x.png", "meta": {"_type": "gradio.FileData"}},
    {"path": "https://example.com/x.png", "url": "https://example.com/x.png", "meta": {"_type": "gradio.FileData"}},
    {"path": "/tmp/up/x.png", "url": "data:image/png;base64,JVBT", "meta": {"_type": "gradio.FileData"}},
    {"background": None, "layers": [], "composite": {"path": "file:///etc/passwd"}},
])
def test_files_given_by_url_are_refused(payload):
    from matebit.app import remote_file_reason

    assert remote_file_reason(["upload", payload]) is not None
    own = {"path": "/tmp/up/x.png", "url": "http://127.0.0.1:7860/gradio_api/file=/tmp/up/x.png",
           "meta": {"_type": "gradio.FileData"}}
    assert remote_file_reason(["upload", own, None, {"composite": own}]) is None


@pytest.mark.slow
def test_the_page_refuses_a_url_before_gradio_fetches_or_decodes_it(tiny_model, tmp_path, monkeypatch):
    """The demo's own Blocks: a FileData naming a URL is refused before gradio's move-to-cache would download it,
    and a data: URL before gradio's image component would decode it instead of the upload."""
    gr = pytest.importorskip("gradio")
    import gradio.processing_utils as pu

    from matebit.app import Limits, ServeApp, build_ui
    from matebit.inference import Translator

    fetched = []

    async def download(url, cache_dir):
        fetched.append(url)
        raise OSError("no network in tests")

    monkeypatch.setattr(pu, "async_ssrf_protected_download", download)
    monkeypatch.setattr(pu, "ssrf_protected_download", lambda url, cache_dir: fetched.append(url))
    app = ServeApp(Translator.from_pretrained(tiny_model, device="cpu"), Limits(), upload_root=tmp_path)
    demo = build_ui(app)
    translate = next(fn for fn in demo.fns.values() if fn.name == "on_translate")
    Image.fromarray(gradient(48, 40)).save(tmp_path / "ok.png")
    meta = {"_type": "gradio.FileData"}
    for exemplar in ({"path": "http://203.0.113.7/x.png", "url": "http://203.0.113.7/x.png", "meta": meta},
                     {"path": str(tmp_path / "ok.png"), "url": "data:image/png;base64,JVBT", "meta": meta}):
        with pytest.raises(gr.Error, match="URL"):
            asyncio.run(demo.preprocess_data(translate, ["upload", None, None, exemplar], None))
    assert fetched == []


# -- serve: folders of killed servers -------------------------------------------------------------------------------


def test_serve_removes_the_folders_of_killed_servers_at_start(tiny_model, tmp_path, monkeypatch, capsys):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = tmp_path / f"matebit-serve-{dead_pid()}-abc123"
    live = tmp_path / f"matebit-serve-{os.getpid()}-def456"
    other = tmp_path / "matebit-serve-notapid"
    for folder in (stale, live, other):
        (folder / "upload").mkdir(parents=True)
        (folder / "upload" / "x.png").write_bytes(b"x" * 100)
    with socket.socket() as busy:  # the server stops at its port check, after the clean-up
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, _, err = cli(capsys, "serve", "--model", tiny_model, "--port", busy.getsockname()[1], "--device", "cpu")
    assert code == 2 and "in use" in error_line(err, "serve")
    assert not stale.exists() and live.is_dir() and other.is_dir()


def _post(port: int, body: bytes, boundary: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/gradio_api/upload", body=body,
                 headers={"Host": f"127.0.0.1:{port}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    status = conn.getresponse().status
    conn.close()
    return status


def _form(field: str, data: bytes, filename: str | None = None, boundary: str = "matebitboundary") -> bytes:
    disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
    return (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data
            + f"\r\n--{boundary}--\r\n".encode())


@pytest.mark.slow
def test_a_real_server_bounds_its_upload_route_and_its_folder_and_a_kill_is_cleaned_next_start(tiny_model, tmp_path):
    pytest.importorskip("gradio")
    port = free_port()
    temp = tmp_path / "tmp"
    temp.mkdir()
    args = ["--model", tiny_model, "--device", "cpu", "--max-upload-mb", "1"]  # and the default 100 MB in all
    proc = start_server(args, tmp_path, port, env={"TMPDIR": str(temp)})
    try:
        b = "matebitboundary"
        assert _post(port, _form("files", b"x" * (30 * 2**20)), b) == 413  # a 30 MB field that is no file
        assert _post(port, _form("files", b"x" * 1000), b) == 400  # a small one: a 4xx too, not a 500
        statuses = []
        while len(statuses) < 130 and 413 not in statuses:  # 0.9 MB each, one by one under the 1 MB limit
            statuses.append(_post(port, _form("files", os.urandom(900_000), filename=f"u{len(statuses)}.png"), b))
        assert statuses[0] == 200 and statuses[-1] == 413, statuses
        folders = list(temp.glob("matebit-serve-*"))
        assert len(folders) == 1
        held = sum(p.stat().st_size for p in folders[0].rglob("*") if p.is_file())
        assert held <= 100 * 2**20, held
    finally:
        proc.send_signal(signal.SIGKILL)  # no exit handler runs: the folder stays behind
        proc.wait(timeout=30)
    assert len(list(temp.glob("matebit-serve-*"))) == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        done = subprocess.run([sys.executable, "-m", "matebit", "serve", *map(str, args), "--port",
                               str(busy.getsockname()[1])], env={**os.environ, "TMPDIR": str(temp)},
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert list(temp.glob("matebit-serve-*")) == []
