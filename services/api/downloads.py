"""Downloads of a run's full redacted logs through short-lived links.

``GET /api/sandbox/runs/<id>/logs/<stream>/download`` (bearer token) answers with a redirect to a
read-only link that expires: a SAS URL on Azure Blob Storage, or, for the local store, an
HMAC-signed URL that ``/api/sandbox/blobs/...`` below serves without a token.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, redirect, request
from flask_smorest import abort

from services.api.errors import error_body
from services.api.runs import blp, parse_id, runtime
from shared.db import runs as runs_db
from shared.storage import STREAMS, BlobNotFound, log_path
from shared.storage import local as local_store

blobs = Blueprint("blobs", __name__, url_prefix="/api/sandbox/blobs")


@blp.route("/<run_id>/logs/<stream>/download", methods=["GET"])
@blp.response(302)
@blp.alt_response(404, description="No such run, stream or log")
def download(run_id: str, stream: str) -> Any:
    """Redirect to a read-only link to the stream's full redacted log; it expires."""
    if stream not in STREAMS:
        abort(404, message=f"no stream {stream!r}; use stdout or stderr")
    rid = parse_id(run_id)
    rt = runtime()
    with rt.pool.connection() as conn:
        run = runs_db.get_run(conn, rid)
    if run is None:
        abort(404, message=f"no run with id {run_id!r}")
    path = log_path(str(rid), stream)
    if run.purged_at is not None or rt.blobs.size(path) == 0:
        abort(404, message=f"run {run_id} has no {stream} log")
    response = redirect(rt.blobs.download_url(path, rt.settings.download_ttl_s), code=302)
    response.headers["Cache-Control"] = "no-store"
    return response


@blobs.get("/<path:path>")
def serve(path: str) -> Any:
    """Serve a local-store blob to the holder of a valid signed link."""
    rt = current_app.extensions["sandbox_runtime"]
    if not isinstance(rt.blobs, local_store.LocalBlobStore):
        return jsonify(error_body(404, "blobs are served by the storage account")), 404
    problem = local_store.verify(
        rt.blobs.signing_key, path, request.args.get("expires", ""), request.args.get("sig", "")
    )
    if problem is not None:
        return jsonify(error_body(403, f"download link refused: {problem}")), 403
    try:
        data = rt.blobs.get(path)
    except BlobNotFound:
        return jsonify(error_body(404, "no such blob")), 404
    mimetype = "application/json" if path.endswith(".json") else "text/plain; charset=utf-8"
    return Response(data, mimetype=mimetype, headers={"Cache-Control": "no-store"})
