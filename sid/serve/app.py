"""The HTTP side of ``sid serve`` (Starlette): the JSON API under /api/, the page at /, its static files.

Every handler asks the library (``IdentityStore``, ``sid.formats``, the job kinds) what the CLI asks,
so a failure carries the CLI's one-line message and hint, with an HTTP status for its kind.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sid import __version__
from sid.errors import (
    BadInput,
    IdentityExists,
    IdentityNotFound,
    IncompatibleIdentity,
    InvalidName,
    ModelNotFound,
    OutOfMemory,
    SidError,
    StoreError,
    as_sid_error,
)
from sid.serve import kinds
from sid.serve.jobs import FINAL, JobNotFound, Jobs, error_dict
from sid.serve.security import COOKIE, Guard, Keys
from sid.serve.uploads import TooLarge, client_stem, save_file, save_photo
from sid.store import IdentityStore

MAX_FILES = 16  # uploads per request
STATUS: list[tuple[type[SidError], int]] = [  # first match wins: subclasses before their bases
    (TooLarge, 413),
    (IdentityNotFound, 404),
    (JobNotFound, 404),
    (IdentityExists, 409),
    (StoreError, 409),
    (InvalidName, 400),
    (IncompatibleIdentity, 422),
    (ModelNotFound, 422),
    (OutOfMemory, 507),
    (BadInput, 400),
]


@dataclass
class Server:
    """What the handlers share: the store, the jobs and the keys."""

    store: IdentityStore
    jobs: Jobs
    keys: Keys
    uploads: Path  # where import uploads wait to be read


def status_of(e: SidError) -> int:
    return next((code for cls, code in STATUS if isinstance(e, cls)), 500)


def error_response(e: Exception) -> JSONResponse:
    error = e if isinstance(e, SidError) else as_sid_error(e)
    return JSONResponse({"error": error_dict(error)}, status_code=status_of(error))


def _http_error(request: Request, e: Exception) -> JSONResponse:
    """Starlette's own refusals (an unknown path, a method not allowed) in the same shape."""
    detail, status = getattr(e, "detail", str(e)), getattr(e, "status_code", 500)
    body = {"error": {"message": str(detail), "hint": "see GET /api/openapi.json", "kind": "HTTP"}}
    return JSONResponse(body, status_code=status)


def _server(request: Request) -> Server:
    return request.app.state.sid


# -- identities -----------------------------------------------------------------------------------
async def identities(request: Request) -> Response:
    listing = await anyio.to_thread.run_sync(_server(request).store.list)
    rows = [
        {**row, "thumbnail_url": f"/api/identities/{row['name']}/thumbnail" if row.get("thumbnail") else None}
        for row in listing.identities
    ]
    return JSONResponse({"identities": rows, "errors": [asdict(e) for e in listing.errors]})


async def identity(request: Request) -> Response:
    store, name = _server(request).store, request.path_params["name"]
    if request.method == "DELETE":
        await anyio.to_thread.run_sync(store.remove, name)
        return JSONResponse({"removed": name})
    return JSONResponse(await anyio.to_thread.run_sync(store.info, name))


async def thumbnail(request: Request) -> Response:
    data = await anyio.to_thread.run_sync(_server(request).store.thumbnail, request.path_params["name"])
    if data is None:
        raise IdentityNotFound(f"{request.path_params['name']} has no thumbnail", "re-learn it to get one")
    return Response(data, media_type="image/png")


async def rename(request: Request) -> Response:
    store, old = _server(request).store, request.path_params["name"]
    new = (await _json(request)).get("to")
    if not isinstance(new, str):
        raise BadInput('send the new name as {"to": NAME}', 'e.g. {"to": "alice2"}')
    await anyio.to_thread.run_sync(store.rename, old, new)
    return JSONResponse(await anyio.to_thread.run_sync(store.info, new))


async def export(request: Request) -> Response:
    import tempfile

    from sid.formats import write_export

    srv, name = _server(request), request.path_params["name"]
    fmt = request.query_params.get("format", "sid")
    ident = await anyio.to_thread.run_sync(srv.store.get, name)
    srv.uploads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=srv.uploads) as tmp:
        path = Path(tmp) / f"{ident.name}.safetensors"  # A1111 and ComfyUI take the trigger word from it
        await anyio.to_thread.run_sync(write_export, ident, fmt, path)
        data = path.read_bytes()
    headers = {"content-disposition": f'attachment; filename="{path.name}"'}
    return Response(data, media_type="application/octet-stream", headers=headers)


async def import_identity(request: Request) -> Response:
    import tempfile

    from sid.formats import as_identity, infer_name, read_import

    srv = _server(request)
    async with request.form(max_files=1, max_fields=4) as form:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise BadInput("no file uploaded", "send the embedding as the multipart field 'file'")
        data = await upload.read()
        given = form.get("name")
        force = form.get("force") in ("1", "true")
    filename = upload.filename or "upload"
    srv.uploads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=srv.uploads) as tmp:
        path = save_file(data, filename, Path(tmp))
        imported = await anyio.to_thread.run_sync(read_import, path)
    name = given if isinstance(given, str) and given else infer_name(imported, Path(client_stem(filename)))
    if name is None:
        raise BadInput(f"cannot infer an identity name from {filename!r}", "send a name")
    ident = as_identity(imported, name, filename)
    try:
        await anyio.to_thread.run_sync(lambda: srv.store.save(ident, overwrite=force))
    except IdentityExists as e:
        raise IdentityExists(e.message, "send another name, or force") from None
    return JSONResponse(await anyio.to_thread.run_sync(srv.store.info, ident.name), status_code=201)


# -- jobs -----------------------------------------------------------------------------------------
async def jobs(request: Request) -> Response:
    srv = _server(request)
    if request.method == "GET":
        return JSONResponse({"jobs": [j.as_dict() for j in srv.jobs.all.values()]})
    kind, params, device, files = await _submission(request)
    job = srv.jobs.new(kind, params, device)

    def prepare() -> None:  # decoding photos and the first imports take a while: off the event loop
        kinds.prepare(job, _save_uploads(kind, files, job.folder / "in"))

    try:
        await anyio.to_thread.run_sync(prepare)
    except BaseException:
        import shutil

        shutil.rmtree(job.folder, ignore_errors=True)
        raise
    srv.jobs.submit(job)
    return JSONResponse(job.as_dict(), status_code=202)


async def _submission(request: Request) -> tuple[str, dict[str, Any], str | None, list[tuple[str, bytes]]]:
    """(kind, params, device, uploads) from a JSON body or a multipart form (``params`` as JSON text)."""
    files: list[tuple[str, bytes]] = []
    if request.headers.get("content-type", "").startswith(("multipart/form-data", "application/x-www-form")):
        async with request.form(max_files=MAX_FILES, max_fields=8) as form:
            body: dict[str, Any] = {"kind": form.get("kind"), "device": form.get("device")}
            try:
                body["params"] = json.loads(str(form.get("params") or "{}"))
            except ValueError:
                raise BadInput(
                    "params is not JSON", 'send params as a JSON object, e.g. {"prompt": "..."}'
                ) from None
            for _, value in form.multi_items():
                if not isinstance(value, str):
                    files.append((value.filename or "", await value.read()))
    else:
        body = await _json(request)
    kind, params, device = body.get("kind"), body.get("params") or {}, body.get("device")
    if not isinstance(kind, str) or not isinstance(params, dict) or not isinstance(device, (str, type(None))):
        raise BadInput(
            "a job needs a kind and params (an object)", 'e.g. {"kind": "render", "params": {...}}'
        )
    return kind, params, device, files


def _save_uploads(kind: str, files: list[tuple[str, bytes]], folder: Path) -> list[Path]:
    """Each upload checked and written under a server-chosen name (batch photos: their validated stem)."""
    from sid.store import check_name_syntax

    if files and kind not in kinds.TAKES_UPLOADS:
        raise BadInput(f"a {kind} job takes no uploads", "send settings only")
    saved = []
    for i, (filename, data) in enumerate(files, start=1):
        stem = check_name_syntax(client_stem(filename)) if kind == "learn-many" else f"photo-{i}"
        saved.append(save_photo(data, filename, folder, stem))
    return saved


async def job(request: Request) -> Response:
    srv = _server(request)
    job_id = request.path_params["id"]
    if request.method in ("DELETE", "POST"):
        return JSONResponse(srv.jobs.cancel(job_id).as_dict())
    return JSONResponse(srv.jobs.get(job_id).as_dict())


async def events(request: Request) -> Response:
    """Server-Sent Events: every event of the job from ``?from=N`` (or Last-Event-ID + 1) until it ends."""
    the_job = _server(request).jobs.get(request.path_params["id"])
    last = request.headers.get("last-event-id")
    given = request.query_params.get("from", "0")
    start = int(last) + 1 if last and last.isdigit() else int(given) if given.isdigit() else 0

    async def stream() -> Any:
        seq = start
        while True:
            batch = await anyio.to_thread.run_sync(the_job.wait, seq, 10.0)
            for event in batch:
                data = json.dumps(event, default=str)
                yield f"id: {event['seq']}\nevent: {event['type']}\ndata: {data}\n\n"
                seq = event["seq"] + 1
            if not batch:
                yield ": still running\n\n"
            if the_job.status in FINAL and seq >= len(the_job.events):
                return

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"cache-control": "no-store"})


async def job_file(request: Request) -> Response:
    the_job = _server(request).jobs.get(request.path_params["id"])
    name = request.path_params["file"]
    if name not in the_job.files():  # only what the job wrote: never a path the client makes up
        raise BadInput(f"job {the_job.id} has no file {name!r}", "list its files with GET /api/jobs/ID")
    return FileResponse(the_job.folder / "out" / name, filename=Path(name).name)


async def outputs(request: Request) -> Response:
    rows = [
        {"job": j.id, "kind": j.kind, "file": f, "url": f"/api/jobs/{j.id}/files/{f}", "params": j.params}
        for j in _server(request).jobs.all.values()
        for f in j.files()
    ]
    return JSONResponse({"outputs": rows})


async def server_info(request: Request) -> Response:
    srv = _server(request)
    workers = {
        d: {
            "queued": len(w.queue),
            "running": w.current.id if w.current else None,
            "models": w.resident.names(),
        }
        for d, w in srv.jobs.workers.items()
    }
    return JSONResponse({"version": __version__, "store": str(srv.store.root), "devices": workers})


async def openapi(request: Request) -> Response:
    from sid.serve.schema import schema

    return JSONResponse(schema(ROUTES))


# -- the page -------------------------------------------------------------------------------------
STATIC = resources.files("sid.serve") / "static"


async def page(request: Request) -> Response:
    return Response(STATIC.joinpath("index.html").read_bytes(), media_type="text/html")


async def login(request: Request) -> Response:
    session = _server(request).keys.redeem(request.query_params.get("token", ""))
    if session is None:
        raise BadInput("this login link was used already or is wrong", "restart sid serve for a new link")
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, session, httponly=True, samesite="strict")
    return response


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise BadInput("the request body is not JSON", "send a JSON object") from None
    if not isinstance(body, dict):
        raise BadInput("the request body is not a JSON object", "send a JSON object")
    return body


def _guarded(handler: Any) -> Any:
    """Handlers answer SidErrors (and anything else) as the CLI's one line, with a status."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as e:
            return error_response(e)

    return wrapped


ROUTES = [
    ("/api/identities", identities, ["GET"]),
    ("/api/identities/import", import_identity, ["POST"]),
    ("/api/identities/{name}", identity, ["GET", "DELETE"]),
    ("/api/identities/{name}/thumbnail", thumbnail, ["GET"]),
    ("/api/identities/{name}/rename", rename, ["POST"]),
    ("/api/identities/{name}/export", export, ["GET"]),
    ("/api/jobs", jobs, ["GET", "POST"]),
    ("/api/jobs/{id}", job, ["GET", "DELETE"]),
    ("/api/jobs/{id}/cancel", job, ["POST"]),
    ("/api/jobs/{id}/events", events, ["GET"]),
    ("/api/jobs/{id}/files/{file:path}", job_file, ["GET"]),
    ("/api/outputs", outputs, ["GET"]),
    ("/api/server", server_info, ["GET"]),
    ("/api/openapi.json", openapi, ["GET"]),
    ("/login", login, ["GET"]),
    ("/", page, ["GET"]),
]


def create_app(server: Server, hosts: set[str]) -> Any:
    routes: list[Any] = [Route(path, _guarded(h), methods=m) for path, h, m in ROUTES]
    routes.append(Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"))
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.sid = server
    return Guard(app, server.keys, hosts)
