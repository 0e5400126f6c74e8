"""Gunicorn settings for the api; command-line flags (e.g. ``-b``) override them."""

from __future__ import annotations

bind = "127.0.0.1:8000"
# Threads serve many slow clients cheaply: a log follower holds one thread, mostly asleep in a
# Redis read, so 2 x 128 threads hold 200 followers with room left for submissions. The Postgres
# pool is opened lazily in each worker after fork and is only borrowed per query.
workers = 2
worker_class = "gthread"
threads = 128
timeout = 60
graceful_timeout = 20
accesslog = None
preload_app = False


# Prometheus multiprocess mode (PROMETHEUS_MULTIPROC_DIR is set by the start script): start from
# an empty directory, and drop a dead worker's live files so /metrics stays right.
def on_starting(server):  # type: ignore[no-untyped-def]
    from shared.metrics import reset_multiprocess_dir

    reset_multiprocess_dir()


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    from shared.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    # The ~90,000 objects of the loaded app live as long as the worker: out of the collector's
    # way, a full collection takes microseconds instead of the 25-50 ms that showed up as the
    # api's p99 under load.
    import gc

    gc.freeze()
