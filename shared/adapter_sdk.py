"""Sandbox Runner adapter SDK: the container side of the adapter contract.

Stdlib only and Python 3.9+ compatible, because this single file is copied into adapter images
(as ``/opt/adapter/adapter_sdk.py``) next to the adapter script. PEP 604 ``X | None`` hints only
appear in annotations, which ``from __future__ import annotations`` leaves unevaluated.

Contract, in brief:

* Environment: ``SANDBOX_RUN_ID``, ``SANDBOX_METHOD_ID`` (e.g. ``seo.evaluate_content``),
  ``SANDBOX_ATTEMPT`` and ``SANDBOX_INPUT_PATH`` (default ``/sandbox/input/input.json``), a
  read-only JSON file holding the run's input object.
* Result: the adapter prints ONE stdout line ``::sandbox-evaluation::`` + compact JSON object.
  If printed more than once, the last one wins. Stdout is used because on Azure Container
  Instances no file can be read back after the container exits. Logs are ordinary
  stdout/stderr lines.
* Exit codes: 0 success; 1 the method ran and reports failure (an evaluation may still be
  printed); 2 bad input; 3 unknown method id; anything else is a crash (this SDK uses 4 for an
  unhandled exception). The platform kills at the wall limit or on OOM (137).
* The container runs as uid 65534 with a read-only root filesystem, a small tmpfs on /tmp and
  no network.

Usage::

    from adapter_sdk import BadInput, main, method

    @method("seo.evaluate_content")
    def evaluate(input: dict) -> dict:
        if "title" not in input:
            raise BadInput("title is required")
        return {"score": 100}

    if __name__ == "__main__":
        main()
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

EVALUATION_MARKER = "::sandbox-evaluation::"
DEFAULT_INPUT_PATH = "/sandbox/input/input.json"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_UNKNOWN_METHOD = 3
EXIT_CRASH = 4

MethodFn = Callable[[dict[str, Any]], dict[str, Any]]

_METHODS: dict[str, MethodFn] = {}
# Prefix handlers let one function serve a family of ids (e.g. every "test.*" method).
_PREFIX_METHODS: dict[str, MethodFn] = {}

__all__ = [
    "DEFAULT_INPUT_PATH",
    "EVALUATION_MARKER",
    "AdapterFailure",
    "BadInput",
    "emit_evaluation",
    "main",
    "method",
    "read_input",
    "registered_methods",
]


class BadInput(Exception):
    """The input does not fit the method (exit code 2)."""


class AdapterFailure(Exception):
    """The method ran and reports failure (exit code 1), optionally with an evaluation."""

    def __init__(self, message: str, evaluation: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.evaluation = evaluation


def method(method_id: str) -> Callable[[MethodFn], MethodFn]:
    """Register ``fn(input) -> evaluation`` for ``method_id``.

    An id ending in ``.*`` (e.g. ``"test.*"``) matches every id with that prefix; exact ids
    take precedence over prefixes.
    """

    def register(fn: MethodFn) -> MethodFn:
        if method_id.endswith(".*"):
            _PREFIX_METHODS[method_id[:-1]] = fn
        else:
            _METHODS[method_id] = fn
        return fn

    return register


def registered_methods() -> list[str]:
    """Known method ids (prefix registrations shown as ``prefix.*``), sorted."""
    return sorted(list(_METHODS) + [prefix + "*" for prefix in _PREFIX_METHODS])


def _resolve(method_id: str) -> MethodFn | None:
    if method_id in _METHODS:
        return _METHODS[method_id]
    # Longest prefix wins so "test.slow.*" can override "test.*".
    for prefix in sorted(_PREFIX_METHODS, key=len, reverse=True):
        if method_id.startswith(prefix):
            return _PREFIX_METHODS[prefix]
    return None


def read_input(path: str | None = None) -> dict[str, Any]:
    """Read the run's input object from ``path`` or ``$SANDBOX_INPUT_PATH``.

    Raises BadInput if the file is missing, is not JSON, or is not a JSON object.
    """
    path = path or os.environ.get("SANDBOX_INPUT_PATH") or DEFAULT_INPUT_PATH
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise BadInput(f"input file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read input file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"input file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadInput(f"input must be a JSON object, got {type(data).__name__}")
    return data


def emit_evaluation(evaluation: dict[str, Any]) -> None:
    """Print the evaluation marker line on stdout and flush it."""
    if not isinstance(evaluation, dict):
        raise TypeError(f"evaluation must be a dict, got {type(evaluation).__name__}")
    # Compact and ASCII-only so the line survives any log transport unchanged; allow_nan=False
    # because NaN/Infinity are not valid JSON for the consumer.
    line = json.dumps(evaluation, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    sys.stdout.write(EVALUATION_MARKER + line + "\n")
    sys.stdout.flush()


def _log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _exit(code: int) -> NoReturn:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        sys.exit(code)


def main() -> NoReturn:
    """Dispatch on ``$SANDBOX_METHOD_ID``, emit the evaluation and exit per the contract."""
    method_id = os.environ.get("SANDBOX_METHOD_ID", "").strip()
    fn = _resolve(method_id) if method_id else None
    if fn is None:
        known = ", ".join(registered_methods()) or "(none)"
        _log(f"unknown method id {method_id!r}; known methods: {known}")
        _exit(EXIT_UNKNOWN_METHOD)

    try:
        evaluation = fn(read_input())
        if not isinstance(evaluation, dict):
            raise TypeError(
                f"method {method_id} returned {type(evaluation).__name__}, expected dict"
            )
        emit_evaluation(evaluation)
    except BadInput as exc:
        _log(f"bad input: {exc}")
        _exit(EXIT_BAD_INPUT)
    except AdapterFailure as exc:
        _log(f"method failed: {exc}")
        if exc.evaluation is not None:
            emit_evaluation(exc.evaluation)
        _exit(EXIT_FAILURE)
    except SystemExit:
        # A method calling sys.exit() chose its own exit code deliberately.
        raise
    except BaseException:  # everything else is a crash, KeyboardInterrupt included
        traceback.print_exc(file=sys.stderr)
        _exit(EXIT_CRASH)
    _exit(EXIT_OK)
