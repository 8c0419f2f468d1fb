"""Rich output inside the sandbox: display(), MIME bundles, inline matplotlib figures, and
files in (put frames) and out (artifacts).

Standard library only, shipped next to codemode_runtime.py. matplotlib is never imported here
unless the program imported it: an import hook sets the inline backend (a module registered
here) when the program first imports matplotlib, and its parts are looked up only then.
"""

from __future__ import annotations

# base64 is imported where it is used: a session's start and a plain run do not need it.
import io
import json
import os
import stat
import sys
import types
from collections.abc import Callable

import codemode_protocol as P

MAX_DISPLAY = 10 << 20  # characters one display may take, unless the host says otherwise
MAX_ARTIFACTS = 50
MAX_ARTIFACT_BYTES = 100 << 20
OUTPUTS = "outputs"  # files the program leaves here come back to the host
BACKEND = "codemode_inline"  # the module matplotlib loads for MPLBACKEND=module://codemode_inline

#: The methods IPython's formatters look for, with the MIME type each one makes.
REPR_METHODS = (
    ("text/html", "_repr_html_"),
    ("text/markdown", "_repr_markdown_"),
    ("image/svg+xml", "_repr_svg_"),
    ("image/png", "_repr_png_"),
    ("image/jpeg", "_repr_jpeg_"),
    ("text/latex", "_repr_latex_"),
    ("application/json", "_repr_json_"),
    ("application/javascript", "_repr_javascript_"),
    ("application/pdf", "_repr_pdf_"),
)
_BINARY = ("image/png", "image/jpeg", "application/pdf")
_JSON_TYPES = ("application/json",)
_encode_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


# --- MIME bundles ----------------------------------------------------------------------------


def mime_bundle(
    obj: object,
    include: object = None,
    exclude: object = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[dict, dict]:
    """(data, metadata) for `obj`, as IPython's display formatter would make them.

    A repr method that raises or returns something unusable is skipped (with a warning), as
    IPython does; `text/plain` is always there.
    """
    data: dict = {}
    metadata: dict = {}
    if not isinstance(obj, type):  # classes have the methods unbound: IPython skips them too
        if _is_figure(obj):
            data["image/png"] = figure_png(obj)
        method = getattr(obj, "_repr_mimebundle_", None)
        if callable(method):
            _add_mimebundle(
                data, metadata, _call(method, warn, include=include, exclude=exclude), warn
            )
        for mime, name in REPR_METHODS:
            method = getattr(obj, name, None)
            if mime not in data and callable(method):
                _add(data, metadata, mime, _call(method, warn), warn)
    if "text/plain" not in data:
        data["text/plain"] = _plain(obj)
    if include:
        data = {k: v for k, v in data.items() if k in include or k == "text/plain"}
    if exclude:
        data = {k: v for k, v in data.items() if k not in exclude or k == "text/plain"}
    return data, {k: v for k, v in metadata.items() if k in data}


def _call(method: Callable, warn: Callable[[str], None] | None, **kwargs: object) -> object:
    try:
        return method(**kwargs)
    except TypeError:
        if kwargs:  # an older _repr_mimebundle_() that takes no include/exclude
            return _call(method, warn)
        raise
    except Exception as exc:
        if warn is not None:
            warn(f"{getattr(method, '__qualname__', method)} raised {type(exc).__name__}: {exc}")
        return None


def _add_mimebundle(data: dict, metadata: dict, out: object, warn: Callable | None) -> None:
    if isinstance(out, tuple) and len(out) == 2:
        out, meta = out
        if isinstance(meta, dict):
            metadata.update(meta)
    if isinstance(out, dict):
        for mime, value in out.items():
            if isinstance(mime, str):
                _add(data, metadata, mime, value, warn)


def _add(data: dict, metadata: dict, mime: str, value: object, warn: Callable | None) -> None:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict):
        value, metadata[mime] = value  # the (data, metadata) form of a repr method
    encoded = encode_mime(mime, value)
    if encoded is not None:
        data[mime] = encoded
    elif value is not None and warn is not None:
        warn(f"a {type(value).__name__} is not usable as {mime}; that format was left out")


def encode_mime(mime: str, value: object) -> object:
    """`value` in the form a notebook keeps it: text, base64 text for binary formats, JSON data
    for JSON types; None if it has none."""
    if value is None:
        return None
    if mime in _JSON_TYPES or mime.endswith("+json"):
        if isinstance(value, (str, bytes)):
            try:
                value = json.loads(value)
            except ValueError:
                return None
        try:
            return json.loads(_encode_json(value))  # a copy that surely is JSON
        except (TypeError, ValueError, RecursionError):
            return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if mime in _BINARY:
            import base64

            return base64.b64encode(raw).decode("ascii")
        return raw.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return None


def _plain(obj: object) -> str:
    try:
        text = repr(obj)
    except Exception as exc:
        text = f"<{type(obj).__name__} object (repr failed: {type(exc).__name__})>"
    return text if len(text) <= 100_000 else text[:100_000] + "..."


def bundle_size(data: dict, metadata: object = None) -> int:
    """Characters a bundle takes on the wire, its MIME types and metadata too (about its size in
    a notebook; the host counts the same)."""
    size = len(_encode_json(metadata)) if metadata else 0
    for mime, value in data.items():
        size += len(mime) + (len(value) if isinstance(value, str) else len(_encode_json(value)))
    return size


def value_bundle(value: object, limit: int) -> dict | None:
    """The rich representation of a run's value, when it has one beyond text/plain."""
    if value is None or isinstance(value, (str, int, float, bool, list, dict, tuple)):
        return None
    data, _ = mime_bundle(value)
    if len(data) < 2 or bundle_size(data) > limit:
        return None
    return data


class Displayer:
    """`display()` for the program: each object becomes a display frame, in order with its
    output (`sync` flushes the output first)."""

    def __init__(
        self, send: Callable[[dict], None], sync: Callable[[], None], warn: Callable[[str], None]
    ) -> None:
        self._send = send
        self._sync = sync
        self._warn = warn
        self.limit = MAX_DISPLAY

    def display(
        self,
        *objs: object,
        include: object = None,
        exclude: object = None,
        metadata: dict | None = None,
        raw: bool = False,
        **_ignored: object,
    ) -> None:
        """Show each object as IPython's display() would (its richest representations).

        `raw=True`: each object already is a MIME bundle (a dict of MIME type to data).
        display_id, transient and clear are accepted and ignored."""
        for obj in objs:
            if raw:
                if not isinstance(obj, dict):
                    raise TypeError(
                        f"display(raw=True) takes MIME bundles (dicts), not {type(obj).__name__}"
                    )
                data, meta = {}, {}
                _add_mimebundle(data, meta, obj, self._warn)
                data.setdefault("text/plain", "")
            else:
                data, meta = mime_bundle(obj, include, exclude, self._warn)
            if isinstance(metadata, dict):
                meta.update(metadata)
            self.send_bundle(data, meta, type(obj).__name__)

    def send_bundle(self, data: dict, metadata: dict, what: str = "display") -> None:
        metadata = _jsonable(metadata)
        size = bundle_size(data, metadata)
        if size > self.limit:
            self._warn(
                f"a display of a {what} was left out: it takes {size / 2**20:.1f} MiB, "
                f"more than the {self.limit / 2**20:g} MiB one display may take"
            )
            return
        try:
            frame = P.encode({"t": P.DISPLAY, "data": data, "metadata": metadata})
        except (TypeError, ValueError) as exc:
            self._warn(f"a display of a {what} was left out: it is not JSON ({exc})")
            return
        self._sync()
        self._send(frame)


def _jsonable(metadata: dict) -> dict:
    try:
        return json.loads(_encode_json(metadata))
    except (TypeError, ValueError, RecursionError):
        return {}


# --- helpers the program may display ---------------------------------------------------------


class _Rich:
    mime = "text/plain"

    def __init__(self, data: object = None, *, filename: str | None = None) -> None:
        if filename is not None:
            with open(filename, "rb") as f:
                data = f.read()
        self.data = data

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict:
        return {self.mime: self.data}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} object>"


class HTML(_Rich):
    mime = "text/html"


class Markdown(_Rich):
    mime = "text/markdown"


class SVG(_Rich):
    mime = "image/svg+xml"


class Latex(_Rich):
    mime = "text/latex"


class JSON(_Rich):
    mime = "application/json"


class Image(_Rich):
    """A PNG or JPEG image, from bytes or a file (its format from the name or the bytes)."""

    def __init__(
        self, data: bytes | None = None, *, filename: str | None = None, format: str | None = None
    ) -> None:
        super().__init__(data, filename=filename)
        raw = bytes(self.data or b"")
        name = (format or filename or "").lower()
        jpeg = name.endswith(("jpg", "jpeg")) or raw[:3] == b"\xff\xd8\xff"
        self.mime = "image/jpeg" if jpeg else "image/png"


# --- matplotlib, inline ----------------------------------------------------------------------


def _is_figure(obj: object) -> bool:
    figure = sys.modules.get("matplotlib.figure")
    return figure is not None and isinstance(obj, figure.Figure)


def figure_png(figure: object) -> bytes:
    """The figure as a PNG, the same bytes for the same figure (no timestamp or version)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def install_matplotlib_backend(displayer: Displayer) -> None:
    """Make figures display inline, as IPython's inline backend does, without importing
    matplotlib: a module registered here becomes matplotlib's backend when the program first
    imports matplotlib (an import hook sets it then). MPLBACKEND and matplotlib.use() win, and
    the environment stays as it was, so a subprocess's matplotlib is not pointed at a module
    only this process has."""
    module = types.ModuleType(BACKEND, "Figures shown with display(), as PNG.")

    def show(*args: object, **kwargs: object) -> None:
        """plt.show(): display every open figure, then close them."""
        flush_figures(displayer)

    def lazy(name: str) -> object:
        # Only matplotlib asks for these, so importing its Agg canvas here imports nothing new.
        from matplotlib.backend_bases import FigureManagerBase
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        module.FigureCanvas = FigureCanvasAgg
        module.FigureManager = FigureManagerBase
        if name in ("FigureCanvas", "FigureManager"):
            return getattr(module, name)
        raise AttributeError(name)

    module.show = show
    module.__getattr__ = lazy
    sys.modules[BACKEND] = module
    sys.meta_path.insert(0, _MatplotlibHook())


class _MatplotlibHook:
    """A meta path finder that waits for `import matplotlib`, lets the usual finders load it,
    and then sets the inline backend (unless MPLBACKEND names one)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        if name != "matplotlib":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # once is enough, and the search below must skip it
        import importlib.util

        spec = importlib.util.find_spec(name)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        load = loader.exec_module

        def exec_module(module: types.ModuleType) -> None:
            load(module)
            if "MPLBACKEND" not in os.environ:
                module.rcParams["backend"] = f"module://{BACKEND}"

        loader.exec_module = exec_module
        return spec


def flush_figures(displayer: Displayer) -> None:
    """Display and close the figures still open, if pyplot is in use with the inline backend
    (the end of a run, as the end of a cell in IPython)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    try:
        if BACKEND not in str(pyplot.get_backend()):
            return
        import base64

        from matplotlib._pylab_helpers import Gcf

        for manager in Gcf.get_all_fig_managers():
            figure = manager.canvas.figure
            displayer.send_bundle(
                {
                    "image/png": base64.b64encode(figure_png(figure)).decode(),
                    "text/plain": _plain(figure),
                },
                {},
                "figure",
            )
        pyplot.close("all")
    except Exception as exc:  # a broken figure must not break the run's end
        displayer._warn(f"showing the open figures failed ({type(exc).__name__}: {exc})")


# --- files in --------------------------------------------------------------------------------


class Uploads:
    """Writes the host's put frames into the work dir; failures wait for the next run."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.errors: list[str] = []
        self._file: io.BufferedWriter | None = None
        self._path = ""
        self._failed = ""

    def put(self, frame: dict) -> None:
        path = str(frame.get("path", ""))
        if path != self._path:  # a new file begins
            self._close()
            self._path, self._failed = path, ""
            self._file = self._open(path)
        if self._file is not None:
            import base64

            try:
                self._file.write(base64.b64decode(frame.get("d", "")))
            except (OSError, ValueError) as exc:
                self._fail(exc)
        if not frame.get("more"):
            self._close()
            self._path = ""

    def _open(self, path: str) -> io.BufferedWriter | None:
        target = os.path.join(self.workdir, path)
        try:
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            return open(target, "wb")
        except OSError as exc:
            self._fail(exc)
            return None

    def _fail(self, exc: BaseException) -> None:
        if not self._failed:
            self._failed = f"{self._path}: {exc}"
            self.errors.append(self._failed)
        if self._file is not None:
            self._file.close()
            self._file = None

    def _close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                self._fail(exc)
            self._file = None

    def take_errors(self) -> list[str]:
        errors, self.errors = self.errors, []
        return errors


# --- files out -------------------------------------------------------------------------------


class Artifacts:
    """The files a run leaves under outputs/ (and those passed to save()), sent to the host at
    its end: new or changed ones only, within the host's caps."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.saved: list[tuple[str, str]] = []  # (name, path) from save(), in order
        self._sent: dict[str, tuple[int, int]] = {}  # path -> (mtime_ns, size) when sent
        self.max_files = MAX_ARTIFACTS
        self.max_bytes = MAX_ARTIFACT_BYTES

    def save(self, path: str, name: str | None = None) -> str:
        """Bring `path` (a file) back to the host at the end of this run; returns its name."""
        path = os.path.abspath(os.fspath(path))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"save() takes an existing file, and {path!r} is not one")
        name = name or os.path.basename(path)
        if not name or name.startswith(("/", "..")) or "/../" in name:
            raise ValueError(f"save(): {name!r} is not a usable name")
        self.saved.append((name, path))
        return name

    def candidates(self) -> list[tuple[str, str, int, int]]:
        """(name, path, size, mtime_ns) of the files to send, in a stable order. A file saved
        under the name of another in outputs/ comes too (the host names it `name-2`)."""
        found: list[tuple[str, str]] = []
        root = os.path.join(self.workdir, OUTPUTS)
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for file in sorted(files):
                path = os.path.join(folder, file)
                found.append((os.path.relpath(path, root), path))
        seen = {(name, os.path.realpath(path)) for name, path in found}
        for name, path in self.saved:  # the same file under the same name goes once
            if (name, os.path.realpath(path)) not in seen:
                seen.add((name, os.path.realpath(path)))
                found.append((name, path))
        self.saved = []
        result = []
        for name, path in found:
            try:
                info = os.stat(path)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode) and self._sent.get(path) != (
                info.st_mtime_ns,
                info.st_size,
            ):
                result.append((name, path, info.st_size, info.st_mtime_ns))
        return result

    def send(self, send: Callable[[bytes], None], warn: Callable[[str], None]) -> None:
        left: list[str] = []
        count = total = 0
        for name, path, size, mtime in self.candidates():
            if count >= self.max_files or total + size > self.max_bytes:
                left.append(f"{name} ({size:,} bytes)")
                continue
            sent = self._send_file(name, path, size, send, warn)
            if sent is not None:
                count, total = count + 1, total + sent
                self._sent[path] = (mtime, size)
        if left:
            warn(
                f"left in the sandbox (over the cap of {self.max_files} files and "
                f"{self.max_bytes:,} bytes a run may bring back): {', '.join(left)}"
            )

    @staticmethod
    def _send_file(
        name: str, path: str, size: int, send: Callable[[bytes], None], warn: Callable[[str], None]
    ) -> int | None:
        try:
            # O_NONBLOCK: a FIFO swapped in since the stat must not hang the run's end.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            warn(f"could not read {name} to bring it back ({exc})")
            return None
        import base64

        sent = 0
        with os.fdopen(fd, "rb") as f:
            while True:
                chunk = f.read(min(P.CHUNK, size - sent)) if sent < size else b""
                sent += len(chunk)
                more = bool(chunk) and sent < size
                send(
                    P.encode(
                        {
                            "t": P.ARTIFACT,
                            "name": name,
                            "d": base64.b64encode(chunk).decode("ascii"),
                            "more": more,
                        }
                    )
                )
                if not more:
                    return sent
