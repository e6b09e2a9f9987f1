"""The web demo of a trained model: upload checks, handlers and the Gradio page (`matebit serve` launches it).

    matebit serve --model runs/celeba/final          # http://127.0.0.1:7860 (matebit/commands/serve.py)
    matebit serve                                    # the model `matebit demo` trained (matebit-demo/run/model)

The page takes a structure map (uploaded, drawn on a sketch pad, or made from a photo with a converter) and an
exemplar (uploaded or picked from examples); one click translates and shows the output, the warped exemplar
and the reliability map. Clicking a point of the structure map shows where that point looks in the exemplar:
MAT's masked correspondence beside the unmasked one (the paper's Figure 1).

What protects the server:
* it binds to 127.0.0.1 unless `--host` says otherwise; no share link, analytics or run history, and no
  outbound call (gradio serves its own fonts, its telemetry is off, the Hugging Face hub is set offline);
* it answers only requests whose Host header (and Origin header, when sent) names the address it was started on
  (`HostCheck`): a page on another site that rebinds its DNS name to 127.0.0.1 gets 403, not the translate API;
* uploads over `--max-upload-mb` or `--max-pixels` are refused with one message each, checked from the file
  size and the image header before anything is decoded; non-images and corrupt files likewise; only PNG, JPEG,
  WebP, BMP, TIFF and GIF are ever decoded (`matebit.io.IMAGE_FORMATS`), whatever a file is called;
* the upload route (`UploadGuard`) takes a request of at most one upload's size, with a Content-Length, and only
  while the server's folder holds less than `--max-uploads-mb` in all; a malformed form is a 400, not a 500;
* a file is read only from gradio's upload folder: no path typed or sent by a user is opened, and a request
  naming a file by URL (a remote or a data: URL, which gradio would fetch or decode) is refused
  (`remote_file_reason`);
* everything gradio writes goes to a private temporary folder that is removed at exit;
* one translation runs at a time, with a bounded queue.

The logic lives in `ServeApp` (plain methods, testable without a browser); `build_ui` wires it to gradio. The
server's own protections (address, temporary folder, offline environment) are set up by `matebit serve`.
"""

from __future__ import annotations

import functools
import os
import socket
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from matebit import heatmap
from matebit.errors import ImageInputError, InputError, UploadRefused
from matebit.io import IMAGE_FORMATS, check_sides, fit_side, list_images, open_image

@dataclass(frozen=True)
class Limits:
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 16_000_000  # checked from the header, before decoding
    work_side: int = 256  # inputs are downscaled so the longer side is at most this (CPU time stays bounded)
    max_total_bytes: int = 100 * 1024 * 1024  # everything the server's folder may hold (uploads, results)


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


# --------------------------------------------------------------------------------------------------------------
# Validation


def check_upload(path: str | os.PathLike | None, label: str, limits: Limits,
                 upload_root: str | os.PathLike | None = None) -> Image.Image:
    """Open one uploaded image, or raise `UploadRefused` with a message for the page.

    `upload_root`: when given, the file must lie inside it (gradio's upload folder), so a path sent by a
    client can never make the server read anything else.
    """
    if path is None:
        raise UploadRefused(f"{label}: nothing uploaded yet.")
    p = Path(path)
    if upload_root is not None:
        root = Path(upload_root).resolve()
        if not p.resolve().is_relative_to(root):
            raise UploadRefused(f"{label} refused: only files uploaded through this page are read.")
    if not p.is_file():
        raise UploadRefused(f"{label} refused: the upload is missing; please upload it again.")
    size = p.stat().st_size
    if size > limits.max_bytes:
        raise UploadRefused(f"{label} refused: the file is {_mb(size)}; the limit is {_mb(limits.max_bytes)}.")
    if size == 0:
        raise UploadRefused(f"{label} refused: the file is empty.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below decides
        try:
            with Image.open(p, formats=IMAGE_FORMATS) as im:  # reads the header only
                w, h = im.size
        except UnidentifiedImageError:
            raise UploadRefused(f"{label} refused: this file is not an image "
                                f"(PNG, JPEG, WebP, BMP, GIF or TIFF expected).") from None
        except Image.DecompressionBombError:
            raise UploadRefused(f"{label} refused: the image has too many pixels; the limit is "
                                f"{limits.max_pixels:,}.") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise UploadRefused(f"{label} refused: the image cannot be read ({exc}).") from None
    if w * h > limits.max_pixels:
        raise UploadRefused(f"{label} refused: {w}x{h} is {w * h:,} pixels; the limit is {limits.max_pixels:,}.")
    try:
        check_sides((w, h), label)  # before any resizing would stretch a 1 px side up to 16
        return open_image(p, name=label, max_pixels=limits.max_pixels)
    except ImageInputError as exc:
        raise UploadRefused(f"{label} refused: {str(exc).removeprefix(label + ': ')}.") from None


def for_display(im: Image.Image | None, side: int = 256) -> Image.Image | None:
    """Upscale small results (never downscale) so the longer side is at least `side`: a 64 px map is too small
    to see or to click on. NEAREST keeps the pixels honest."""
    if im is None:
        return None
    w, h = im.size
    k = side // max(w, h)
    return im if k <= 1 else im.resize((w * k, h * k), Image.Resampling.NEAREST)


def sketch_to_structure(value: Any) -> Image.Image:
    """A sketch pad's value (gradio EditorValue dict, or an image) -> 'L' map, white strokes on black.

    Strokes on a transparent canvas are read from the alpha channel, whatever their colour; an opaque canvas
    is read by luminance and inverted when it is light (dark lines on white paper).
    """
    im = value.get("composite") if isinstance(value, dict) else value
    if im is None:
        raise UploadRefused("Sketch: draw something on the sketch pad first.")
    if isinstance(im, np.ndarray):
        im = Image.fromarray(im)
    elif not isinstance(im, Image.Image):
        im = Image.open(im, formats=IMAGE_FORMATS)
    lines = None
    if im.mode in ("RGBA", "LA", "PA", "P"):
        alpha = np.asarray(im.convert("RGBA"))[..., 3]
        if alpha.min() < 255:  # a transparent canvas: the strokes are what is opaque
            lines = alpha
    if lines is None:
        lines = np.asarray(im.convert("L"))
        if lines.mean() > 127:  # light paper: the strokes are the dark parts
            lines = 255 - lines
    if lines.max() == 0:
        raise UploadRefused("Sketch: draw something on the sketch pad first.")
    return Image.fromarray(np.ascontiguousarray(lines, dtype=np.uint8), mode="L")


# --------------------------------------------------------------------------------------------------------------
# Pictures


def heat_overlay(exemplar: Image.Image, heat: np.ndarray) -> Image.Image:
    """A heat map (H, W) over the exemplar (same size), coloured as everywhere (`matebit.heatmap`)."""
    return Image.fromarray(heatmap.heat_overlay(np.asarray(exemplar.convert("RGB")), heat), mode="RGB")


def mark_point(im: Image.Image, x: float, y: float) -> Image.Image:
    """The structure map in RGB with a ring at (x, y)."""
    out = im.convert("RGB")
    r = max(3, round(max(out.size) / 40))
    d = ImageDraw.Draw(out)
    d.ellipse([x - r, y - r, x + r, y + r], outline=(255, 40, 40), width=max(1, r // 2))
    return out


def reliability_picture(uncor: Image.Image | None, size: tuple[int, int]) -> Image.Image:
    """1 - uncor_weight in colour: red = matched in the exemplar, blue = filled in from the structure."""
    if uncor is None:
        return Image.new("RGB", size, (60, 60, 60))
    rel = 1.0 - np.asarray(uncor.convert("L"), dtype=np.float32) / 255.0
    return Image.fromarray((heatmap.colormap(rel) * 255).round().astype(np.uint8), mode="RGB")


# --------------------------------------------------------------------------------------------------------------
# The handlers


@dataclass
class Translation:
    output: Image.Image
    warped: Image.Image | None
    reliability: Image.Image
    structure: Image.Image  # what the model saw (after fitting), the picture to click on
    exemplar: Image.Image


class ServeApp:
    """The demo's logic, without gradio: each method takes and returns plain images or raises UploadRefused."""

    def __init__(self, translator, limits: Limits = Limits(), upload_root: str | os.PathLike | None = None):
        self.translator = translator
        self.limits = limits
        self.upload_root = upload_root

    def open(self, path: Any, label: str) -> Image.Image:
        return check_upload(path, label, self.limits, self.upload_root)

    def convert_photo(self, photo_path: Any, converter: str) -> Image.Image:
        """A photo upload -> structure map with one of matebit.convert.PHOTO_CONVERTERS."""
        from matebit.convert import PHOTO_CONVERTERS, ConvertError, MissingDependencyError

        if converter not in PHOTO_CONVERTERS:
            raise UploadRefused(f"Unknown converter {converter!r}; choose one of {', '.join(PHOTO_CONVERTERS)}.")
        photo = fit_side(self.open(photo_path, "Photo").convert("RGB"), self.limits.work_side)
        try:
            # As the model's recipe made its maps: for a face model, the face aligned to its template first.
            return self.translator.processor.structure(photo, converter, name="Photo")[0]
        except MissingDependencyError as exc:
            raise UploadRefused(f"The {converter} converter is not available here: {exc}") from None
        except (ConvertError, ValueError, InputError) as exc:  # InputError: no face found for a face model
            raise UploadRefused(f"The {converter} converter could not use this photo: {exc}") from None

    def structure_from(self, source: str, upload_path: Any, sketch: Any) -> Image.Image:
        if source == "draw":
            return sketch_to_structure(sketch)
        return self.open(upload_path, "Structure map")

    def translate(self, structure: Image.Image, exemplar_path: Any) -> Translation:
        exemplar = fit_side(self.open(exemplar_path, "Exemplar").convert("RGB"), self.limits.work_side)
        structure = fit_side(structure, self.limits.work_side)
        try:
            # At the model's trained size; a face model aligns the exemplar's face to its template.
            result = self.translator(structure, exemplar)
        except InputError as exc:  # e.g. a colour map for a greyscale model, a tiny image, no face in the exemplar
            raise UploadRefused(str(exc)) from None
        out = result.images[0]
        return Translation(out, result.warped[0], reliability_picture(result.uncor_weight[0], out.size),
                           structure, exemplar)

    def correspondence(self, structure: Image.Image, exemplar: Image.Image, x: float, y: float
                       ) -> tuple[Image.Image, Image.Image, Image.Image]:
        """(structure with the point marked, masked heat map over the exemplar, unmasked heat map)."""
        w, h = structure.size
        x, y = min(max(float(x), 0.0), w - 1.0), min(max(float(y), 0.0), h - 1.0)
        result = self.translator(structure, exemplar)
        try:
            masked, full = result.correspondence([(x, y)])
        except ValueError as exc:  # a model without MAT blocks
            raise UploadRefused(str(exc)) from None
        return mark_point(structure, x, y), heat_overlay(exemplar, masked[0]), heat_overlay(exemplar, full[0])


# --------------------------------------------------------------------------------------------------------------
# Host and Origin checks (a defence against DNS rebinding)


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def _host_port(name: str, port: int) -> set[str]:
    name = name.strip().lower().strip("[]")
    host = f"[{name}]" if ":" in name else name
    return {f"{host}:{port}"} | ({host} if port in (80, 443) else set())


def allowed_hosts(host: str, port: int, extra: Iterable[str] = ()) -> frozenset[str]:
    """The Host header values (`name:port`, lower case) a server bound to `host`:`port` answers.

    127.0.0.1 / localhost / ::1: the three loopback names. A wildcard bind (0.0.0.0, ::): those, plus this machine's
    host name and its addresses. Any other address: itself. `extra` adds names (`matebit serve --allowed-host`).
    """
    names = set(extra)
    if host in LOOPBACK_NAMES or host in WILDCARD_HOSTS:
        names |= set(LOOPBACK_NAMES)
    else:
        names.add(host)
    if host in WILDCARD_HOSTS:
        names |= {socket.gethostname(), socket.getfqdn()}
        try:
            names |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
        except OSError:
            pass
    return frozenset(v for n in names if n for v in _host_port(n, port))


def host_permitted(host: str | None, origin: str | None, allowed: frozenset[str]) -> bool:
    """Whether a request with these Host and Origin headers is for this server (see `allowed_hosts`)."""
    if not host or host.strip().lower() not in allowed:
        return False
    if origin is None:
        return True
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.netloc.lower() in allowed


class HostCheck:
    """ASGI middleware: 403 for any HTTP or WebSocket request whose Host or Origin header is not in `allowed`."""

    def __init__(self, app, allowed: Iterable[str]):
        self.app = app
        self.allowed = frozenset(allowed)

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            headers: dict[str, str] = {}
            for key, value in scope.get("headers") or []:
                headers.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
            if not host_permitted(headers.get("host"), headers.get("origin"), self.allowed):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                body = b"403 Forbidden: this server answers only requests for its own address (Host, Origin)\n"
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------------------------------------------
# Files by URL, and the upload route


def remote_file_reason(payload: Any) -> str | None:
    """Why a request's data is refused, or None: every file in it must be one uploaded to this server. A file whose
    `path` is a URL would be downloaded by gradio, and one whose `url` is a data: URL decoded by gradio itself (any
    format, any size) instead of the uploaded file; the page only ever sends its own uploads, whose `url` points at
    this server's /file= route."""
    if isinstance(payload, dict):
        path, url = payload.get("path"), payload.get("url")
        if isinstance(path, str) and ("://" in path or path.startswith("data:")):
            return "files given by URL are refused; upload the file"
        if url is not None and not (isinstance(url, str) and urlsplit(url).scheme in ("http", "https", "")
                                    and "/file=" in urlsplit(url).path):
            return "files given by URL are refused; upload the file"
        values: Iterable[Any] = payload.values()
    elif isinstance(payload, (list, tuple)):
        values = payload
    else:
        return None
    return next((reason for v in values if (reason := remote_file_reason(v)) is not None), None)


def folder_bytes(folder: str | os.PathLike) -> int:
    """The bytes of the files under `folder` (links not followed)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


async def _plain(send, status: int, text: str) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class UploadGuard:
    """ASGI middleware for gradio's upload route (POST .../upload): the body must declare its length and be at most
    `max_request` bytes, and is refused (413) while the server's `folder` holds `max_total` bytes with it and the
    uploads in flight; a form gradio cannot take (a non-file field where files go) is a 400, not a 500."""

    def __init__(self, app, folder: str | os.PathLike, max_request: int, max_total: int):
        self.app, self.folder = app, folder
        self.max_request, self.max_total = max_request, max_total
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope["path"].endswith("/upload"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        length = headers.get("content-length", "")
        if not length.isdigit():
            await _plain(send, 411, "Upload refused: the request must say its length (Content-Length).")
            return
        size = int(length)
        if size > self.max_request:
            await _plain(send, 413, f"Upload refused: the request is {_mb(size)}; the limit is "
                                    f"{_mb(self.max_request)}.")
            return
        if folder_bytes(self.folder) + self.in_flight + size > self.max_total:
            await _plain(send, 413, f"Upload refused: the server's upload space ({_mb(self.max_total)}) is full; "
                                    f"try again later.")
            return
        started = False

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        self.in_flight += size
        try:
            await self.app(scope, receive, tracked)
        except (TypeError, ValueError, UnicodeError):  # gradio's parser on a form it does not expect
            if started:
                raise
            await _plain(send, 400, "Upload refused: the request is not a file upload.")
        finally:
            self.in_flight -= size


# --------------------------------------------------------------------------------------------------------------
# Examples and the UI


def _images_in(folder: Path, limit: int = 6) -> list[Path]:
    return list_images(folder)[:limit]


def find_examples(model_dir: Path, examples: str | os.PathLike | None) -> Path | None:
    """The examples folder: --examples, or the data `matebit demo` wrote beside its model (DEMO/run/model)."""
    if examples is not None:
        return Path(examples)
    data = Path(model_dir).resolve().parent.parent / "data"
    return data if (data / "images").is_dir() and (data / "structure").is_dir() else None


def write_examples(dest: Path, source: Path | None, side: int = 256) -> tuple[list[str], list[str]]:
    """(structure examples, exemplar examples), copied into `dest` (the app's temporary folder).

    `source` is a folder with images/ and structure/ subfolders (a paired data set: structure maps are taken
    from one half, exemplars from the other, so the examples are not ground-truth pairs), or a plain folder
    of exemplar photos; without one, scikit-image's sample photos are the exemplars.
    """
    dest.mkdir(parents=True, exist_ok=True)
    structures: list[tuple[str, Image.Image]] = []
    exemplars: list[tuple[str, Image.Image]] = []

    def read(paths: list[Path], into: list) -> None:
        for p in paths:
            try:
                im = open_image(p, transpose_exif=False)
            except InputError:  # examples are a convenience; an unreadable one is left out
                continue
            into.append((p.stem, im.convert("RGB") if im.mode not in ("L", "RGB") else im))

    if source is not None and (source / "images").is_dir() and (source / "structure").is_dir():
        read(_images_in(source / "structure", 3), structures)
        read(_images_in(source / "images", 6)[3:], exemplars)
    elif source is not None:
        read(_images_in(source), exemplars)
    else:
        try:
            from skimage import data
            for name in ("astronaut", "chelsea", "coffee"):
                exemplars.append((name, Image.fromarray(getattr(data, name)()).convert("RGB")))
        except Exception:  # examples are a convenience; the page works without them
            pass

    def save(items: list, prefix: str) -> list[str]:
        out = []
        for name, im in items:
            path = dest / f"{prefix}-{name}.png"
            try:
                fit_side(im, side, name).save(path)
            except ImageInputError:  # a side under 16 px: not an example anyone can use
                continue
            out.append(str(path))
        return out

    return save(structures, "structure"), save(exemplars, "exemplar")


_HELP = ("Give a **structure map** (upload, draw, or make one from a photo) and an **exemplar**, then "
         "**Translate**. Afterwards, click a point on the structure map below to see where it looks in the "
         "exemplar: MAT's masked correspondence beside the unmasked one.")


def build_ui(app: ServeApp, structure_examples: list[str] = (), exemplar_examples: list[str] = (),
             title: str = "MATEBIT"):
    """The gradio Blocks for `app` (needs gradio; call `offline_environment()` first)."""
    import gradio as gr

    from matebit.convert import PHOTO_CONVERTERS

    def checked_image(check_label: str, **kwargs):
        """gr.Image whose uploads are validated before gradio's own preprocessing opens them.

        The instance's preprocess is wrapped rather than gr.Image subclassed: gradio writes a .pyi stub beside
        the source file of every Component subclass, and the app must write nowhere but its temporary folder.
        """
        image = gr.Image(type="filepath", sources=["upload"], height=220, **kwargs)
        gradio_preprocess = image.preprocess

        def preprocess(payload):
            if payload is not None and payload.path is not None:
                try:
                    check_upload(payload.path, check_label, app.limits, app.upload_root)
                except UploadRefused as exc:
                    raise gr.Error(str(exc), title="Upload refused") from None
            try:
                return gradio_preprocess(payload)
            except gr.Error:
                raise
            except Exception:
                raise gr.Error(f"{check_label} refused: the file cannot be read as an image.",
                               title="Upload refused") from None

        image.preprocess = preprocess
        return image

    def refusing(fn, **hints):
        """fn with InputError shown as a page message. `hints`: real annotations for gradio, which looks for
        gr.SelectData by type hint (string annotations from `from __future__` would not resolve here)."""
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except InputError as exc:
                raise gr.Error(str(exc), title="Refused") from None
        wrapped.__annotations__ = dict(hints)
        return wrapped

    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(f"# {title}: exemplar-based image translation\n{_HELP}")
        source = gr.State("upload")
        pair = gr.State(None)  # (structure, exemplar) the last translation used
        with gr.Row():
            with gr.Column():
                with gr.Tabs() as tabs:
                    with gr.Tab("Upload", id="upload") as tab_upload:
                        structure = checked_image("Structure map", label="Structure map",
                                                  elem_id="structure-upload")
                        if structure_examples:
                            gr.Examples(examples=[[p] for p in structure_examples], inputs=[structure],
                                        label="Example structure maps", cache_examples=False)
                    with gr.Tab("Draw", id="draw") as tab_draw:
                        sketch = gr.Sketchpad(label="Sketch pad", type="pil", canvas_size=(256, 256),
                                              brush=gr.Brush(colors=["#000000"], color_mode="fixed"),
                                              elem_id="sketch")
                    with gr.Tab("From photo", id="photo") as tab_photo:
                        photo = checked_image("Photo", label="Photo", elem_id="photo-upload")
                        converter = gr.Dropdown(list(PHOTO_CONVERTERS), value="canny", label="Converter")
                        convert_btn = gr.Button("Make structure map", elem_id="convert")
            with gr.Column():
                exemplar = checked_image("Exemplar", label="Exemplar", elem_id="exemplar-upload")
                if exemplar_examples:
                    gr.Examples(examples=[[p] for p in exemplar_examples], inputs=[exemplar],
                                label="Example exemplars", cache_examples=False)
        translate_btn = gr.Button("Translate", variant="primary", elem_id="translate")
        with gr.Row():
            output = gr.Image(label="Output", interactive=False, elem_id="output", height=220)
            warped = gr.Image(label="Warped exemplar", interactive=False, elem_id="warped", height=220)
            reliability = gr.Image(label="Reliability (red: matched, blue: not)",
                                   interactive=False, elem_id="reliability", height=220)
        hint = gr.Markdown("Translate first; then click a point on the structure map below.", elem_id="hint")
        with gr.Row():
            clicked = gr.Image(label="Structure map: click a point", interactive=False, elem_id="clickable",
                               height=220)
            heat_masked = gr.Image(label="Masked correspondence (MAT)", interactive=False,
                                   elem_id="heat-masked", height=220)
            heat_full = gr.Image(label="Full correspondence (no mask)", interactive=False,
                                 elem_id="heat-full", height=220)

        def refuse_bad_upload(label: str):
            # Runs on upload, before anything else uses the file: a refusal is shown at once, and the upload
            # is cleared. The raw payload (preprocess=False) is read, so gradio never decodes a refused file.
            def check(payload):
                if not payload:
                    return gr.skip()
                path = payload.get("path") if isinstance(payload, dict) else None
                try:
                    check_upload(path, label, app.limits, app.upload_root)
                except UploadRefused as exc:
                    gr.Warning(str(exc), title="Upload refused")
                    return None
                return gr.skip()
            return check

        for image, label in ((structure, "Structure map"), (photo, "Photo"), (exemplar, "Exemplar")):
            image.upload(refuse_bad_upload(label), image, image, preprocess=False, concurrency_limit=None)

        tab_upload.select(lambda: "upload", None, source, queue=False)
        tab_draw.select(lambda: "draw", None, source, queue=False)
        tab_photo.select(lambda: "photo", None, source, queue=False)

        @refusing
        def on_convert(photo_path, name):
            return app.convert_photo(photo_path, name), gr.Tabs(selected="upload"), "upload"

        convert_btn.click(on_convert, [photo, converter], [structure, tabs, source])

        @refusing
        def on_translate(src, upload_path, sketch_value, exemplar_path):
            if src == "photo":
                raise UploadRefused("Make the structure map from the photo first (the button under it).")
            t = app.translate(app.structure_from(src, upload_path, sketch_value), exemplar_path)
            shown = [for_display(im) for im in (t.output, t.warped, t.reliability, t.structure)]
            return (*shown, None, None, (t.structure, t.exemplar),
                    "Click a point on the structure map to see its correspondence.")

        translate_btn.click(on_translate, [source, structure, sketch, exemplar],
                            [output, warped, reliability, clicked, heat_masked, heat_full, pair, hint],
                            concurrency_limit=1)

        def on_click(state, evt):
            if state is None:
                raise UploadRefused("Translate first, then click a point.")
            structure, exemplar = state
            k = for_display(structure).width / structure.width  # the click is in the displayed picture
            x, y = evt.index[0] / k, evt.index[1] / k
            marked, masked, full = app.correspondence(structure, exemplar, x, y)
            return (for_display(marked), for_display(masked), for_display(full),
                    f"Correspondence of the point ({int(x)}, {int(y)}) of the structure map.")

        clicked.select(refusing(on_click, evt=gr.SelectData), [pair], [clicked, heat_masked, heat_full, hint], concurrency_limit=1)
    demo.queue(default_concurrency_limit=1, max_size=16)
    gradio_preprocess_data = demo.preprocess_data

    async def preprocess_data(block_fn, inputs, *args, **kwargs):
        # Before gradio moves any file to its cache: that step would download a URL or take a data: URL's bytes.
        reason = remote_file_reason(inputs)
        if reason is not None:
            raise gr.Error(reason, title="Refused")
        return await gradio_preprocess_data(block_fn, inputs, *args, **kwargs)

    demo.preprocess_data = preprocess_data  # this Blocks only: nothing of gradio's is patched
    return demo
