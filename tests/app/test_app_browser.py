"""End to end: `matebit serve` in a subprocess, driven by headless Chromium through Selenium.

Needs gradio, selenium and Debian's chromium + chromium-driver; skips (with the reason) without them.
MATEBIT_SCREENSHOT=path.png keeps the screenshot of the page after a translation and a click.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image, ImageDraw

pytestmark = pytest.mark.slow  # a server process and a browser: `pytest -m "not slow"` leaves it out

os.environ.setdefault("SE_AVOID_STATS", "true")  # Selenium sends no usage statistics
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytest.importorskip("gradio", reason="gradio is not installed (pip install 'matebit[app]')")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1300"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inputs(folder: Path) -> dict[str, Path]:
    s = Image.new("L", (64, 64), 0)
    d = ImageDraw.Draw(s)
    d.ellipse([12, 10, 52, 54], outline=255, width=2)
    d.line([20, 30, 44, 30], fill=255, width=2)
    d.arc([22, 36, 42, 46], 0, 180, fill=255, width=2)
    rng = np.random.default_rng(0)
    ex = np.zeros((64, 64, 3), np.uint8)
    ex[:32, :, 0], ex[32:, :, 2], ex[:, :32, 1] = 210, 200, 140
    ex = np.clip(ex + rng.integers(0, 40, ex.shape), 0, 255).astype(np.uint8)
    paths = {"structure": folder / "structure.png", "exemplar": folder / "exemplar.png",
             "text": folder / "notes.png", "big": folder / "big.bmp", "wide": folder / "wide.png"}
    s.save(paths["structure"])
    Image.fromarray(ex).save(paths["exemplar"])
    paths["text"].write_text("not an image, whatever its name says\n" * 20)
    Image.new("RGB", (700, 600), (90, 120, 200)).save(paths["big"])  # ~1.2 MB uncompressed: over 1 MB
    Image.new("RGB", (1500, 1000), (200, 80, 80)).save(paths["wide"])  # a small file, but 1.5 MP: over 1 MP
    return paths


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model):
    """The real command on a free port, run from an empty folder (to see that it writes nothing there)."""
    root = tmp_path_factory.mktemp("serve")
    cwd = root / "cwd"
    cwd.mkdir()
    port = _free_port()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
    log = open(root / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "matebit", "serve", "--model", str(tiny_model), "--port", str(port),
         "--device", "cpu", "--max-upload-mb", "1", "--max-pixels", "1000000"],
        cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"server did not start:\n{(root / 'serve.log').read_text()}")
            time.sleep(0.5)
    info = {"url": url, "proc": proc, "root": root, "cwd": cwd, "port": port, "inputs": _inputs(root)}
    yield info
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def browser(server):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={server['root'] / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # A driver path given explicitly: Selenium Manager is not run, so nothing is downloaded.
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout=60, what="condition"):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(lambda d: condition(d))
    except TimeoutException:
        raise AssertionError(f"timed out waiting for {what}") from None


def _img_src(driver, elem_id: str) -> str | None:
    imgs = driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} img")
    return imgs[0].get_attribute("src") if imgs else None


def _upload(driver, elem_id: str, path: Path) -> None:
    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]").send_keys(str(path))


def _clear(driver, elem_id: str) -> None:
    """Remove an image component's value (its clear button), so the next upload lands in an empty drop zone."""
    for b in driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} button"):
        if (b.get_attribute("aria-label") or "").lower() in ("clear", "remove image"):
            b.click()
            _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f"#{elem_id} input[type=file]"), 10,
                  f"{elem_id} to be empty")
            return


def _page_text(driver) -> str:
    return driver.execute_script("return document.body.innerText")


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def test_translate_click_and_refusals(server, browser):
    d, inputs = browser, server["inputs"]
    d.get(server["url"])
    _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#translate"), 60, "the page")

    # Upload both images and translate: an output image appears.
    _upload(d, "structure-upload", inputs["structure"])
    _upload(d, "exemplar-upload", inputs["exemplar"])
    _wait(d, lambda d: _img_src(d, "structure-upload") and _img_src(d, "exemplar-upload"), 30, "the uploads")
    d.find_element(By.ID, "translate").click()
    _wait(d, lambda d: _img_src(d, "output") and _img_src(d, "clickable"), 60, "the output image")
    for elem in ("output", "warped", "reliability"):
        im = Image.open(__import__("io").BytesIO(_fetch(_img_src(d, elem))))
        assert im.size[0] >= 64 and im.size[1] >= 64, elem

    # Click two points of the structure map: the heat maps appear, then change.
    img = d.find_element(By.CSS_SELECTOR, "#clickable img")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", img)
    w, h = img.size["width"], img.size["height"]
    ActionChains(d).move_to_element_with_offset(img, int(-w * 0.3), int(-h * 0.3)).click().perform()
    _wait(d, lambda d: _img_src(d, "heat-masked") and _img_src(d, "heat-full"), 60, "the heat maps")
    first = {e: _fetch(_img_src(d, e)) for e in ("heat-masked", "heat-full")}
    assert "Correspondence of the point" in _page_text(d)
    src_before = _img_src(d, "heat-masked")
    img = d.find_element(By.CSS_SELECTOR, "#clickable img")
    ActionChains(d).move_to_element_with_offset(img, int(w * 0.3), int(h * 0.3)).click().perform()
    _wait(d, lambda d: _img_src(d, "heat-masked") not in (None, src_before), 60, "the heat map to change")
    second = {e: _fetch(_img_src(d, e)) for e in ("heat-masked", "heat-full")}
    a = np.asarray(Image.open(__import__("io").BytesIO(first["heat-masked"])).convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(__import__("io").BytesIO(second["heat-masked"])).convert("RGB"), dtype=np.int16)
    assert a.shape == b.shape and np.abs(a - b).max() > 0, "the masked heat map did not change"
    assert first["heat-full"] != second["heat-full"], "the full heat map did not change"
    d.execute_script("window.scrollTo(0, 0)")
    shot = Path(os.environ.get("MATEBIT_SCREENSHOT") or server["root"] / "serve.png")
    d.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    # Refusals, each with its own readable message in the page. Over the byte limit, gradio itself refuses
    # the file in the page before it is sent (launch(max_file_size=...)), with its own message.
    refusals = [("text", "not an image"), ("big", "exceed the maximum allowed size of 1.0 Mb"), ("wide", "the limit is 1,000,000")]
    for key, message in refusals:
        _clear(d, "exemplar-upload")
        _upload(d, "exemplar-upload", inputs[key])
        try:
            _wait(d, lambda d: message in _page_text(d), 30, f"the refusal of {key}")
        except AssertionError:
            raise AssertionError(f"no {message!r} for {key} in the page:\n{_page_text(d)[-800:]}") from None

    # No request left this machine: every http(s) URL the page asked for is the server's own.
    hosts = set()
    for entry in d.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            u = urlparse(msg["params"]["request"]["url"])
            if u.scheme in ("http", "https", "ws", "wss"):
                hosts.add(u.hostname)
    assert hosts <= {"127.0.0.1", "localhost"}, hosts


def test_server_binds_localhost_and_cleans_up(server, browser):
    """Runs after the browser test: the listening socket is loopback-only, and SIGTERM removes the temp folder."""
    proc, port = server["proc"], server["port"]
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) == 0
    tcp = Path("/proc/net/tcp")
    if tcp.exists():  # Linux: the listening socket's local address is 127.0.0.1 (0100007F), not 0.0.0.0
        listening = [line.split()[1] for line in tcp.read_text().splitlines()[1:]
                     if line.split()[3] == "0A" and int(line.split()[1].split(":")[1], 16) == port]
        assert listening == ["0100007F:%04X" % port], listening
    log = (server["root"] / "serve.log").read_text()
    temp = Path(log.split("temporary files in ")[1].split()[0])
    assert temp.is_dir() and temp.name.startswith("matebit-serve-")
    proc.terminate()
    proc.wait(timeout=30)
    assert not temp.exists(), "the temporary folder was left behind"
    assert list(server["cwd"].iterdir()) == [], "the server wrote into its working folder"
    import matebit.app
    # gradio writes a .pyi beside the source of any Component subclass; the app must not define one.
    assert not Path(matebit.app.__file__).with_suffix(".pyi").exists()
