"""Throughput and accuracy of sandbox-redact next to cat, scrubadub and detect-secrets.

Run by ``make bench-redact``. Generates a deterministic log (default 64 MB, about 1.5 % of
lines carry a secret or PII), measures MB/s on one core and scores every tool on the labelled
corpus in tests/redaction_corpus (recall: no 8-character piece of a secret survives; FP rate:
share of negative lines changed at all). Throughput is CPU time of the one process doing the
work (this process, or the child for cat and the CLI), best of ``--repeat`` runs, so other
load on a shared machine does not count against a tool. The slow Python anchors run once on a
prefix (``--anchor-mb``); the table says so. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from shared.redaction import Redactor, StreamRedactor  # noqa: E402
from tests.redaction_corpus.scoring import score  # noqa: E402


def make_line(rng: random.Random, n: int) -> str:
    """Return log line number ``n``: access logs, JSON, tracebacks, ids, a few secrets."""
    ts = f"2024-11-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:{(n * 7) % 60:02d}.{n % 1000:03d}Z"
    hexid = f"{rng.getrandbits(128):032x}"
    kind = rng.random()
    if kind < 0.25:
        return (
            f'{ts} INFO  10.{n % 256}.{(n * 3) % 256}.{(n * 7) % 256} - - "GET /api/v1/items/{n}'
            f'?page={n % 9}&sort=asc HTTP/1.1" 200 {n % 9999} "-" "python-requests/2.31.0" '
            f"rt={rng.random():.3f}"
        )
    if kind < 0.45:
        return (
            f'{{"ts": "{ts}", "level": "info", "logger": "app.worker", "msg": "processed batch",'
            f' "batch_id": "{hexid[:8]}-{hexid[8:12]}-{hexid[12:16]}-{hexid[16:20]}-{hexid[20:]}",'
            f' "count": {n % 500}, "duration_ms": {rng.random() * 1000:.2f}, '
            f'"epoch_ms": {1732617600000 + n}}}'
        )
    if kind < 0.55:
        return f'  File "/usr/lib/python3.11/site-packages/app/handlers.py", line {n % 900}, in run'
    if kind < 0.65:
        return (
            f"{ts} DEBUG celery.worker pod=api-7d9f8b6c5-{hexid[:5]} commit={hexid[:40]}"
            f" image=sha256:{hexid}{hexid} version=1.{n % 20}.{n % 7}"
        )
    if kind < 0.75:
        return (
            f"{ts} WARN  retrying request to https://api.example.internal/v2/jobs/{n} (attempt 2/5)"
        )
    if kind < 0.985:
        return (
            f"{ts} INFO  [main] org.apache.kafka.clients.consumer.KafkaConsumer - offset {n * 13}"
            f" committed for partition events-{n % 12} color=#a1b2c3"
        )
    secrets = (
        f"{ts} ERROR login failed for user{n}@example.com from +1 415 555 {n % 10000:04d}",
        f"{ts} DEBUG Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.{hexid}",
        f"{ts} DEBUG connecting to postgres://app:{hexid[:12]}@db.internal:5432/app",
        f"{ts} INFO  export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        f"{ts} INFO  charged card 4111 1111 1111 1111 amount=12.50",
        f"{ts} DEBUG token=ghp_{hexid}abcd page=2",
    )
    return rng.choice(secrets)


def generate_log(size: int, seed: int = 1234) -> str:
    """Return about ``size`` characters of log text, the same for the same seed."""
    rng = random.Random(seed)
    parts: list[str] = []
    total = 0
    n = 0
    while total < size:
        line = make_line(rng, n) + "\n"
        parts.append(line)
        total += len(line)
        n += 1
    return "".join(parts)


def stream_redact(text: str, chunk: int) -> int:
    """Feed ``text`` through a StreamRedactor in ``chunk``-sized pieces; return lines out."""
    stream = StreamRedactor(Redactor())
    count = 0
    for i in range(0, len(text), chunk):
        count += len(stream.feed(text[i : i + chunk]))
    return count + len(stream.close())


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Return the least CPU time of ``repeat`` calls of ``fn`` in this process."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def timed_child(argv: list[str], stdin_path: str | None, repeat: int = 1) -> float:
    """Return the least CPU time (user + system) of ``repeat`` runs of a child process."""
    best = float("inf")
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(stdin_path or "/dev/null", "rb") as src:
            subprocess.run(argv, stdin=src, stdout=subprocess.DEVNULL, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best = min(best, cpu)
    return best


def scrubadub_redact() -> Callable[[str], str]:
    import scrubadub

    scrubber = scrubadub.Scrubber()
    return scrubber.clean


def detect_secrets_redact() -> Callable[[str], str]:
    """Redact what ``scan_line`` reports, keeping its entropy plugins to their own limits.

    ``scan_line`` (detect-secrets' ad hoc scan, the one for strings rather than files) returns
    every high-entropy candidate with its entropy for the caller to judge, as
    ``detect-secrets scan --string`` does when it prints ``False (1.585)``; we keep only those
    above the plugin's limit (4.5 for base64, 3.0 for hex) and replace each reported value.
    """
    from detect_secrets.core.scan import scan_line
    from detect_secrets.plugins.high_entropy_strings import (
        Base64HighEntropyString,
        HexHighEntropyString,
    )
    from detect_secrets.settings import default_settings

    limits = {
        plugin.secret_type: plugin for plugin in (Base64HighEntropyString(), HexHighEntropyString())
    }

    def reported(found: Any) -> bool:
        plugin = limits.get(found.type)
        if plugin is None:
            return True
        return bool(plugin.calculate_shannon_entropy(found.secret_value) > plugin.entropy_limit)

    def redact(text: str) -> str:
        out = []
        with default_settings():
            for line in text.split("\n"):
                for found in scan_line(line):
                    if found.secret_value and reported(found):
                        line = line.replace(found.secret_value, "[REDACTED]")
                out.append(line)
        return "\n".join(out)

    return redact


def corpus_scores(redact: Callable[[str], str]) -> tuple[str, str]:
    """Return recall and false-positive rate of ``redact`` on the corpus, formatted."""
    figures = score(redact, check_kinds=False)
    return f"{figures.recall:.3f}", f"{figures.fp_rate:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=64.0, help="size of the generated log")
    parser.add_argument("--anchor-mb", type=float, default=1.0, help="prefix for slow anchors")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (best is shown)")
    parser.add_argument(
        "--only-ours", action="store_true", help="skip the scrubadub and detect-secrets rows"
    )
    args = parser.parse_args()
    text = generate_log(int(args.mb * 1e6))
    data = text.encode()
    size = len(data) / 1e6
    scope = f"{size:.0f} MB"
    rows: list[tuple[str, str, float, str, str]] = []
    recall, fp = corpus_scores(Redactor().redact_text)
    with tempfile.NamedTemporaryFile(suffix=".log") as f:
        f.write(data)
        f.flush()
        cat_s = timed_child(["cat", f.name], None, args.repeat)
        rows.append(("cat (baseline)", scope, size / cat_s, *corpus_scores(lambda t: t)))
        secs = timed(lambda: Redactor().redact_text(text), args.repeat)
        rows.append(("sandbox-redact API, whole text", scope, size / secs, recall, fp))
        for chunk, label in ((64 * 1024, "64 KiB chunks"), (4096, "4 KiB chunks")):
            secs = timed(partial(stream_redact, text, chunk), args.repeat)
            rows.append((f"sandbox-redact API, {label}", scope, size / secs, recall, fp))
        lines = text[: int(8e6)].splitlines(keepends=True)
        part = sum(map(len, lines)) / 1e6

        def per_line() -> None:
            stream = StreamRedactor(Redactor())
            for line in lines:
                stream.feed(line)

        rows.append(
            (
                "sandbox-redact API, one line per feed",
                f"{part:.0f} MB",
                part / timed(per_line, args.repeat),
                recall,
                fp,
            )
        )
        script = shutil.which("sandbox-redact", path=str(Path(sys.executable).parent))
        if script:
            secs = timed_child([script], f.name, args.repeat)
            rows.append(("sandbox-redact CLI", scope, size / secs, recall, fp))
    prefix = text[: int(args.anchor_mb * 1e6)]
    prefix = prefix[: prefix.rfind("\n") + 1]
    peers = (
        ("scrubadub 2.0.1", scrubadub_redact),
        ("detect-secrets 1.5.0", detect_secrets_redact),
    )
    for name, factory in () if args.only_ours else peers:
        try:
            redact = factory()
        except ImportError as exc:
            rows.append((name, "not installed", 0.0, str(exc), "-"))
            continue
        secs = timed(partial(redact, prefix))
        rows.append(
            (
                name,
                f"{len(prefix) / 1e6:.1f} MB prefix",
                len(prefix) / 1e6 / secs,
                *corpus_scores(redact),
            )
        )
    print("| tool | input | MB/s (CPU, one core) | corpus recall | corpus FP rate |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, row_scope, mbps, recall_s, fp_s in rows:
        print(f"| {name} | {row_scope} | {mbps:.1f} | {recall_s} | {fp_s} |")


if __name__ == "__main__":
    main()
