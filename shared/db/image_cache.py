"""Table ``image_cache``: the adapter images each executor host holds, for its pull cache."""

from __future__ import annotations

from typing import Any

import psycopg


def touch(
    conn: psycopg.Connection[Any], host: str, image_id: str, ref: str, size: int, uses: int = 1
) -> None:
    """Record that ``host`` ran ``image_id`` ``uses`` more times, the last one now."""
    conn.execute(
        "INSERT INTO image_cache (host, image_id, ref, size_bytes, uses) "
        "VALUES (%s, %s, %s, %s, %s) "
        "ON CONFLICT (host, image_id) DO UPDATE SET uses = image_cache.uses + EXCLUDED.uses, "
        "last_used_at = now(), ref = EXCLUDED.ref, size_bytes = EXCLUDED.size_bytes",
        (host, image_id, ref, size, uses),
    )


def held(conn: psycopg.Connection[Any], host: str) -> list[dict[str, Any]]:
    """Return the host's cached images, least recently used first."""
    return conn.execute(
        "SELECT image_id, ref, size_bytes, uses, last_used_at FROM image_cache "
        "WHERE host = %s ORDER BY last_used_at, image_id",
        (host,),
    ).fetchall()


def forget(conn: psycopg.Connection[Any], host: str, image_id: str) -> None:
    """Drop an evicted image from the host's record."""
    conn.execute("DELETE FROM image_cache WHERE host = %s AND image_id = %s", (host, image_id))


def needed_by_live_runs(conn: psycopg.Connection[Any]) -> set[str]:
    """Return the image ids that queued, ready or running runs were planned with."""
    rows = conn.execute(
        "SELECT DISTINCT plan->>'imageId' AS image_id FROM sandbox_run "
        "WHERE status IN ('provisioning', 'ready', 'running') AND plan ? 'imageId'"
    ).fetchall()
    return {r["image_id"] for r in rows if r["image_id"]}


def most_run(conn: psycopg.Connection[Any], limit: int) -> list[str]:
    """Return the registry digests (``repo@sha256:...``) run most in the last day."""
    rows = conn.execute(
        "SELECT image_digest, count(*) AS n FROM sandbox_run "
        "WHERE queued_at > now() - interval '1 day' AND image_digest LIKE '%%@sha256:%%' "
        "GROUP BY image_digest ORDER BY n DESC, image_digest LIMIT %s",
        (limit,),
    ).fetchall()
    return [r["image_digest"] for r in rows]
