"""The labelled redaction corpus and how a redactor is scored on it (see README.md)."""
