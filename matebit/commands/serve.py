"""`matebit serve`: launch the local web demo (`matebit.app`) of a trained model.

    matebit serve --model runs/celeba/final          # http://127.0.0.1:7860
    matebit serve                                    # the model `matebit demo` trained (matebit-demo/run/model)

This module owns what protects the process around the page: the bind address (checked free before anything is
loaded), the Host/Origin check against it, the upload route's limits, a private temporary folder removed at exit (and
those of killed servers removed at start), an environment that keeps gradio offline, and a Pillow that decodes only
the formats matebit reads; the page itself and its upload checks are in matebit/app.py.
"""

from __future__ import annotations

import argparse
import atexit
import errno
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

from matebit.config import COMPILE_MODES
from matebit.errors import InputError

DEFAULT_MODEL_DIR = Path("matebit-demo/run/model")  # where `matebit demo` (default --out) saves its model


def offline_environment(temp_dir: str | os.PathLike) -> None:
    """Environment for gradio, set before it is imported: no telemetry or hub calls, files under temp_dir."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["GRADIO_TEMP_DIR"] = str(temp_dir)
    os.environ["GRADIO_SHARE"] = "False"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["GRADIO_RUN_HISTORY"] = "False"


TEMP_PREFIX = "matebit-serve-"  # then the server's pid: matebit-serve-<pid>-<random>


def private_temp_dir() -> Path:
    """A 0700 folder for everything gradio writes, removed when the process exits."""
    path = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def remove_stale_temp_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """Remove the private folders that killed servers left (SIGKILL runs no exit handler): this user's
    `matebit-serve-<pid>-*` folders in `root` (default: the system's temporary folder) whose pid no longer runs."""
    from matebit.runlock import pid_running

    removed = []
    for p in sorted(Path(root or tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*")):
        found = re.match(rf"{TEMP_PREFIX}([0-9]+)-", p.name)
        try:
            mine = p.is_dir() and not p.is_symlink() and p.stat().st_uid == os.getuid()
        except OSError:
            continue
        if found and mine and not pid_running(int(found[1])):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def resolve_model_dir(model: str | None) -> Path:
    if model:
        from matebit.weights import resolve_model

        return resolve_model(model)
    if (DEFAULT_MODEL_DIR / "config.json").is_file():
        return DEFAULT_MODEL_DIR
    raise InputError(f"no model given and none at {DEFAULT_MODEL_DIR}/: pass --model NAME|DIR (a shipped "
                     f"model's name, or a folder written by `matebit train` or save_pretrained), or run "
                     f"`matebit demo` first, which trains one there")


def check_port(host: str, port: int) -> None:
    """Refuse, in one line suggesting --port, an address this process cannot listen on (in use, privileged)."""
    if not 1 <= port <= 65535:
        raise InputError(f"--port {port}: not a port number (1-65535)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(f"--host {host}: cannot resolve this address ({exc})") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is not busy
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InputError(f"port {port} on {host} is in use (another server?); choose another with "
                                 f"--port N") from None
            if exc.errno == errno.EACCES:
                raise InputError(f"port {port} on {host}: permission denied (ports below 1024 need privileges); "
                                 f"choose another with --port N") from None
            raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); check --host, or choose "
                             f"another --port") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="NAME|DIR",
                        help=f"a shipped model's name (`matebit models`) or a model folder (default: "
                             f"{DEFAULT_MODEL_DIR}, from `matebit demo`)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; 0.0.0.0 exposes the demo to your network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="also answer requests for this host name (the Host header is checked against the "
                             "bound address: a defence against DNS rebinding); repeatable")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES, metavar="MODE",
                        help="torch.compile the model (default mode; or reduce-overhead on a GPU): the first "
                             "request of each size compiles (tens of seconds on a CPU), later ones run faster")
    parser.add_argument("--max-upload-mb", type=float, default=10.0, help="largest upload in MB (default 10)")
    parser.add_argument("--max-uploads-mb", type=float, default=100.0,
                        help="what the server's temporary folder may hold in all, uploads and results, in MB; "
                             "uploads beyond it are refused until old files expire (default 100)")
    parser.add_argument("--max-pixels", type=int, default=16_000_000,
                        help="largest image in pixels, checked before decoding (default 16,000,000)")
    parser.add_argument("--work-side", type=int, default=256,
                        help="inputs are downscaled to this longer side before translating (default 256)")
    parser.add_argument("--examples", metavar="DIR",
                        help="examples to offer: a folder of exemplar photos, or a data set with images/ and "
                             "structure/ (default: the demo's data beside a demo model, else scikit-image photos)")


def main(args: argparse.Namespace) -> int:
    model_dir = resolve_model_dir(args.model)
    stale = remove_stale_temp_dirs()
    if stale:
        print(f"matebit serve: removed {len(stale)} temporary folder(s) of killed servers", file=sys.stderr)
    if args.max_uploads_mb < args.max_upload_mb:
        raise InputError(f"--max-uploads-mb {args.max_uploads_mb:g} is below --max-upload-mb {args.max_upload_mb:g}")
    if args.examples is not None and not Path(args.examples).is_dir():
        raise InputError(f"--examples {args.examples}: not a folder")
    check_port(args.host, args.port)  # before minutes of loading: a busy port is said at once
    temp_dir = private_temp_dir()
    offline_environment(temp_dir)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise InputError("the web demo needs gradio: pip install 'matebit[app]'") from None
    from starlette.middleware import Middleware

    from matebit.app import (HostCheck, Limits, ServeApp, UploadGuard, allowed_hosts, build_ui, find_examples,
                             write_examples)
    from matebit.inference import Translator
    from matebit.io import restrict_pillow_formats

    from matebit import speed

    speed.configure_cpu_threads()  # the command's choice; a Translator leaves threads to its caller
    restrict_pillow_formats()  # gradio decodes uploads too; in this process only matebit's formats can be decoded
    translator = Translator.from_pretrained(model_dir, device=args.device, compile=args.compile)
    limits = Limits(max_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels,
                    work_side=args.work_side, max_total_bytes=int(args.max_uploads_mb * 1024 * 1024))
    app = ServeApp(translator, limits, upload_root=temp_dir)
    structures, exemplars = write_examples(temp_dir / "examples", find_examples(model_dir, args.examples),
                                           args.work_side)
    demo = build_ui(app, structures, exemplars)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"matebit serve: warning: binding to {args.host}; anyone who can reach it can use the demo")
    print(f"matebit serve: model {model_dir} on {translator.device}; temporary files in {temp_dir}")
    # SIGTERM ends the server like Ctrl-C does, so the temporary folder is removed either way.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    host_check = Middleware(HostCheck, allowed=allowed_hosts(args.host, args.port, args.allowed_host))
    # The multipart framing of one upload takes a little more than the file itself.
    upload_guard = Middleware(UploadGuard, folder=temp_dir, max_request=limits.max_bytes + 2**20,
                              max_total=limits.max_total_bytes)
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False,
                    max_file_size=limits.max_bytes, show_error=False, footer_links=[], run_history=False,
                    ssr_mode=False, pwa=False, mcp_server=False, enable_monitoring=False, allowed_paths=[], quiet=False,
                    app_kwargs={"middleware": [host_check, upload_guard]})
    except OSError as exc:  # the port was taken after the check: gradio's advice names its own variables
        if "port" in str(exc).lower():
            raise InputError(f"port {args.port} on {args.host} is in use (another server?); choose another with "
                             f"--port N") from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(temp_dir, ignore_errors=True)
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt
