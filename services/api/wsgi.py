"""Gunicorn entry point: ``gunicorn -c services/api/gunicorn.conf.py services.api.wsgi:app``."""

from __future__ import annotations

from services.api.app import create_app
from shared.config import load_settings
from shared.logs import configure_logging

_settings = load_settings()
configure_logging("api", _settings)
app = create_app(_settings)
