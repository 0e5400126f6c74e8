"""Outbound result webhooks and GitHub integration: signing, URL safety, configured endpoints."""
