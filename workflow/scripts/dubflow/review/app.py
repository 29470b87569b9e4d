"""The review app's web side: a Starlette app on 127.0.0.1 behind a random token.

Security, because a local web server is reachable by every page the reviewer's browser
opens:

- it answers only to ``Host: 127.0.0.1:<port>`` or ``localhost:<port>`` (a DNS-rebinding
  page has another host name);
- every request carries the token printed with the URL: in the query for what the page
  loads (page, scripts, video, clips), in the ``X-Review-Token`` header for POSTs (a header
  no cross-site form or simple request can set);
- a request another site started (``Sec-Fetch-Site`` other than same-origin/none, or an
  ``Origin`` other than the app's) is refused before anything else;
- requests name a language and a line id, checked against the video's own; no route
  takes a file name, and a path with ``..`` or an encoded slash is refused outright;
- every text is escaped: Jinja2 autoescape in the page, ``textContent`` in the script,
  and a Content-Security-Policy without inline scripts.

Bad input gets one sentence (``{"error": ...}``) and changes nothing.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs

from jinja2 import Environment, FileSystemLoader
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dubflow import voices
from dubflow.errors import DubflowError
from dubflow.review import choices, media
from dubflow.review.project import ReviewError, Superseded, Unknown, Video, write_edits
from dubflow.review.runner import Rebuilder

HERE = Path(__file__).resolve().parent
log = logging.getLogger(__name__)
TOKEN_HEADER = "x-review-token"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; media-src 'self' blob:; "
       "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer",
                    "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
                    "Cross-Origin-Resource-Policy": "same-origin"}
#: Voices offered per speaker besides the ones in use.
VOICE_CHOICES = 12


class Refused(Exception):
    def __init__(self, status: int, sentence: str) -> None:
        super().__init__(sentence)
        self.status, self.sentence = status, sentence


class Guard:
    """ASGI middleware: host, origin, token and path checks before any route runs."""

    def __init__(self, app, token: str, port_ref: dict) -> None:
        self.app, self.token, self.port_ref = app, token, port_ref

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            try:
                self.check(scope)
            except Refused as refused:
                return await _error(refused.status, refused.sentence)(scope, receive, send)
        return await self.app(scope, receive, send)

    def check(self, scope) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        port = self.port_ref.get("port")
        host = headers.get("host", "")
        if host not in {f"127.0.0.1:{port}", f"localhost:{port}"}:
            raise Refused(403, "The review app answers only at 127.0.0.1 on its own port.")
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise Refused(403, "Requests from other sites are refused.")
        origin = headers.get("origin")
        if origin is not None and origin != f"http://{host}":
            raise Refused(403, "Requests from other sites are refused.")
        raw = scope.get("raw_path", b"").decode("latin-1")
        query = scope.get("query_string", b"").decode("latin-1")
        if any(bad in f"{raw}?{query}".lower() for bad in ("..", "%2f", "%5c", "\\", "%2e")):
            raise Refused(400, "Requests name languages and lines, never files or folders.")
        if scope["method"] in ("GET", "HEAD"):
            given = parse_qs(query).get("token", [""])[0]
        else:
            given = headers.get(TOKEN_HEADER, "")
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            raise Refused(403, "This request lacks the review token; open the URL the "
                               "review command printed.")


class ReviewApp:
    """The state behind the routes: the video, the engines, the rebuild."""

    def __init__(self, video: Video, previewer, rebuilder: Rebuilder, token: str) -> None:
        self.video, self.previewer, self.rebuilder, self.token = (video, previewer, rebuilder,
                                                                  token)
        self.apply_lock = threading.Lock()
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                                     autoescape=True)

    # -- helpers ------------------------------------------------------------------------
    def lang_of(self, request: Request) -> str:
        lang = request.query_params.get("lang") or request.path_params.get("lang")
        if lang is None:
            return next(iter(self.video.languages))
        self.video.language(lang)
        return lang

    def voice_options(self, lang: str) -> list[str]:
        language = self.video.language(lang)
        try:
            tts = voices.settings(self.video.settings()["tts"])
            offered = list(itertools.islice(voices.candidates(lang, tts), VOICE_CHOICES))
        except DubflowError:
            offered = []
        return sorted(set(offered) | set(language.voices.values()))

    def rebuilt(self) -> None:
        """After a rebuild: read the new files, forget previews made over the old ones."""
        self.video.reload()
        self.previewer.forget()

    # -- routes -------------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        lang = self.lang_of(request)
        language = self.video.language(lang)
        template = self.templates.get_template("review.html")
        html = template.render(
            name=self.video.name, lang=lang, languages=list(self.video.languages),
            language=language, speakers=language.speakers, token=self.token,
            options=self.voice_options(lang),
            speaker_index={s: i for i, s in enumerate(language.speakers)},
            checks=sum(row.to_check for row in language.rows),
            source_language=self.video.source_language,
            rebuild=self.rebuilder.status().number)
        return HTMLResponse(html, headers=SECURITY_HEADERS)

    async def video_file(self, request: Request) -> Response:
        lang = self.lang_of(request)
        path = await run_in_threadpool(media.proxy, self.video.video_path,
                                       self.video.work / lang / "dub.wav", lang,
                                       self.video.root / "cache" / "review" / self.video.name,
                                       self.video.base_config["ffmpeg"])
        return FileResponse(path, media_type="video/webm", headers=SECURITY_HEADERS)

    async def clip(self, request: Request) -> Response:
        lang = self.lang_of(request)
        kind = request.path_params["kind"]
        row = self.video.language(lang).row(request.path_params["line_id"])
        if kind == "source":
            data = media.clip(self.video.work / "source.wav", row.start, row.end)
        elif kind == "dub":
            data = media.clip(self.video.work / lang / "dub.wav", row.play_start, row.play_end)
        else:
            raise ReviewError(f"A clip is of the source or of the dub, not {kind!r}.")
        return Response(data, media_type="audio/wav", headers=SECURITY_HEADERS)

    async def preview(self, request: Request) -> Response:
        body = await _json_body(request)
        lang = _field(body, "lang")
        row, text = self.video.check_text(lang, _field(body, "id"), body.get("text"))
        spec = body.get("voice")
        if spec not in (None, ""):
            _, spec = self.video.check_voice(lang, row.speaker, spec)
        audio, info = await run_in_threadpool(self.previewer.preview, lang, row.id, text,
                                              spec or None)
        headers = {**SECURITY_HEADERS, "X-Preview": json.dumps(info)}
        return Response(audio, media_type="audio/wav", headers=headers)

    async def apply(self, request: Request) -> Response:
        body = await _json_body(request)
        lang = _field(body, "lang")
        language = self.video.language(lang)
        edits, voice_changes = body.get("edits") or {}, body.get("voices") or {}
        if not isinstance(edits, dict) or not isinstance(voice_changes, dict):
            raise ReviewError("Apply takes edits as {line id: text} and voices as "
                              "{speaker: voice}.")
        with self.apply_lock:
            if self.rebuilder.busy():
                return _error(409, "A rebuild is already running; wait until it finishes, "
                                   "then apply again.")
            rows = {}
            for line_id, text in edits.items():
                row, text = self.video.check_text(lang, str(line_id), text)
                if text != row.text:
                    rows[row.id] = (text, row.source)
            chosen = {}
            for speaker, spec in voice_changes.items():
                speaker, spec = self.video.check_voice(lang, speaker, spec)
                if spec != language.voices.get(speaker):
                    chosen[speaker] = spec
            if not rows and not chosen:
                raise ReviewError("There is nothing to apply: no line or voice was changed.")
            if rows:
                write_edits(self.video.edits_file(lang), rows)
            if chosen:
                choices.write_choices(self.video.voices_file, {lang: chosen})
            self.rebuilder.start(on_done=self.rebuilt)
        return JSONResponse({"started": True, "lines": sorted(rows), "voices": sorted(chosen)},
                            status_code=202, headers=SECURITY_HEADERS)

    async def status(self, request: Request) -> Response:
        run = self.rebuilder.status()
        return JSONResponse({"state": run.state, "done": run.done_steps,
                             "total": run.total_steps, "number": run.number,
                             "error": run.error, "log": run.log if run.state == "failed" else "",
                             "seconds": round((run.finished or time.time()) - run.started, 1)
                             if run.started else 0.0},
                            headers=SECURITY_HEADERS)


async def _json_body(request: Request) -> dict:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise ReviewError("Send the request as JSON.")
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise ReviewError("The request is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ReviewError("The request must be a JSON object.")
    return body


def _field(body: dict, key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ReviewError(f"The request names no {key}.")
    return value


def _error(status: int, sentence: str) -> JSONResponse:
    return JSONResponse({"error": sentence}, status_code=status, headers=SECURITY_HEADERS)


def create_app(video: Video, previewer, rebuilder: Rebuilder, port_ref: dict):
    """The ASGI app and its token; ``port_ref['port']`` is the server's port."""
    token = secrets.token_urlsafe(24)
    state = ReviewApp(video, previewer, rebuilder, token)

    async def refused(request: Request, error: Exception) -> Response:
        # a superseded preview conflicts with the newer text's, which is the answer
        status = next((code for kind, code in ((Unknown, 404), (Superseded, 409))
                       if isinstance(error, kind)), 400)
        return _error(status, str(error))

    async def on_error(request: Request, error: Exception) -> Response:
        return _error(500, f"The app failed on this request ({type(error).__name__}); "
                           f"see the terminal it runs in.")

    async def not_found(request: Request, error: Exception) -> Response:
        return _error(404, "There is no such page in the review app.")

    routes = [
        Route("/", state.page),
        Route("/video/{lang}", state.video_file),
        Route("/clip/{lang}/{line_id}/{kind}", state.clip),
        Route("/api/preview", state.preview, methods=["POST"]),
        Route("/api/apply", state.apply, methods=["POST"]),
        Route("/api/status", state.status),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={
        DubflowError: refused, Exception: on_error, 404: not_found, 405: not_found})
    app.state.review = state
    return Guard(app, token, port_ref), token
