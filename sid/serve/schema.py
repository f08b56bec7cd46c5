"""The OpenAPI description of /api/, built from the route table so that the two never disagree."""

from __future__ import annotations

import re
from typing import Any

from sid import __version__

ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "hint": {"type": "string"},
                "kind": {"type": "string"},
            },
        }
    },
}
SUMMARIES = {
    ("/api/identities", "get"): "List identities (with thumbnail URLs) and unreadable files",
    (
        "/api/identities/import",
        "post",
    ): "Import an identity or embedding (multipart field 'file'; 'name', 'force')",
    ("/api/identities/{name}", "get"): "One identity's metadata",
    ("/api/identities/{name}", "delete"): "Remove an identity",
    ("/api/identities/{name}/thumbnail", "get"): "The identity's face thumbnail (PNG)",
    ("/api/identities/{name}/rename", "post"): 'Rename: {"to": NEW}',
    ("/api/identities/{name}/export", "get"): "Download the identity (?format=sid|diffusers|a1111|comfyui)",
    ("/api/jobs", "get"): "Every job of this server",
    ("/api/jobs", "post"): "Queue a job: JSON {kind, params, device} or multipart with photo/control uploads",
    ("/api/jobs/{id}", "get"): "A job's status, result and output files",
    ("/api/jobs/{id}", "delete"): "Cancel a job",
    ("/api/jobs/{id}/cancel", "post"): "Cancel a job",
    ("/api/jobs/{id}/events", "get"): "The job's progress as Server-Sent Events (?from=N)",
    ("/api/jobs/{id}/files/{file}", "get"): "Download one of the job's output files",
    ("/api/outputs", "get"): "Every output file of every job",
    ("/api/server", "get"): "Version, store, devices with their queues and resident models",
    ("/api/openapi.json", "get"): "This document",
}


def schema(routes: list[tuple[str, Any, list[str]]]) -> dict[str, Any]:
    """The OpenAPI document of ``routes`` (``sid.serve.app.ROUTES``: path, endpoint, methods)."""
    from sid.serve.kinds import BUILDERS, EXTRA, SERVER_SET

    paths: dict[str, Any] = {}
    for route, _, methods in routes:
        if not route.startswith("/api/"):
            continue
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route)
        params = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in re.findall(r"\{(\w+)\}", path)
        ]
        for method in methods:
            paths.setdefault(path, {})[method.lower()] = {
                "summary": SUMMARIES.get((path, method.lower()), ""),
                "parameters": params,
                "responses": {
                    "200": {"description": "OK"},
                    "4XX": {"description": "The CLI's message and hint", "content": _json(ERROR)},
                },
            }
    job = {
        "type": "object",
        "required": ["kind"],
        "properties": {
            "kind": {"type": "string", "enum": list(BUILDERS)},
            "params": {
                "type": "object",
                "description": "The fields of the kind's library config (sid.render.RenderConfig, "
                "sid.train.LearnConfig, ...), by name, except those the server sets: "
                + "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in SERVER_SET.items())
                + ". Also: "
                + "; ".join(f"{k}: {', '.join(v)}" for k, v in EXTRA.items() if v),
            },
            "device": {"type": "string", "description": "one of the server's devices, or auto"},
        },
    }
    paths["/api/jobs"]["post"]["requestBody"] = {"content": _json(job)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "sid serve", "version": __version__},
        "components": {"securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
        "security": [{"token": []}],
        "paths": paths,
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}
