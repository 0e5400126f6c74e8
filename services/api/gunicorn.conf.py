"""Gunicorn settings for the api; command-line flags (e.g. ``-b``) override them."""

from __future__ import annotations

bind = "127.0.0.1:8000"
# Threads serve many slow clients cheaply; the pool is opened lazily in each worker after fork.
workers = 2
worker_class = "gthread"
threads = 8
timeout = 60
graceful_timeout = 20
accesslog = None
preload_app = False
