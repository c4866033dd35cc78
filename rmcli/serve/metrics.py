"""The gateway's figures for Prometheus (``GET /metrics``): requests, attempts, failures and
cancellations by provider and kind, latency histograms, tokens, cost, client keys held back,
and the circuit breakers, in Prometheus's text format (names prefixed ``rmgr_``).

Each worker counts what it served in memory (``Counts``). With ``--workers N``, each one also
writes its counts to a file of its own in a folder the workers share (``METRICS_DIR_VARIABLE``),
at most once a second while they change, and ``/metrics`` adds up every file, so that whichever
worker a scrape reaches answers for all of them (a worker's last counts stay after it exits:
counters never go back). The breakers are read from the state at each scrape: they are shared
by every worker and host already.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

import msgspec

from rmcore.attempts import AttemptRecord
from rmcore.breaker import CircuitState

__all__ = ["METRICS_DIR_VARIABLE", "Counts", "Histogram", "WorkerCounts", "render"]

METRICS_DIR_VARIABLE: Final = "_RMGR_SERVE_METRICS_DIR"
"""The folder where ``--workers N``'s processes leave their counts for each other's scrapes."""

LATENCY_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""The upper bounds of the latency histograms, in seconds (a model's answer takes 0.2 s to 60 s)."""

WRITE_EVERY_S: Final = 1.0
"""How often, at most, a worker of several writes its counts for the others."""


class Histogram(msgspec.Struct):
    """Observations counted by ``LATENCY_BUCKETS_S`` (not cumulative; the last is over the top)."""

    buckets: list[int] = msgspec.field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    total_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.total_s += seconds

    def add(self, other: Histogram) -> None:
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.total_s += other.total_s


class WorkerCounts(msgspec.Struct):
    """What one worker served, as it writes it for the others (labels joined by ``\\x1f``)."""

    requests: dict[str, int] = msgspec.field(default_factory=dict)
    request_seconds: dict[str, Histogram] = msgspec.field(default_factory=dict)
    in_flight: int = 0
    attempts: dict[str, int] = msgspec.field(default_factory=dict)
    attempt_seconds: dict[str, Histogram] = msgspec.field(default_factory=dict)
    tokens: dict[str, int] = msgspec.field(default_factory=dict)
    cost_usd: dict[str, float] = msgspec.field(default_factory=dict)
    limited: dict[str, int] = msgspec.field(default_factory=dict)

    def add(self, other: WorkerCounts) -> None:
        """Add ``other``'s counts to these."""
        for mine, theirs in (
            (self.requests, other.requests), (self.attempts, other.attempts), (self.tokens, other.tokens),
            (self.limited, other.limited),
        ):
            for label, count in theirs.items():
                mine[label] = mine.get(label, 0) + count
        for label, usd in other.cost_usd.items():
            self.cost_usd[label] = self.cost_usd.get(label, 0.0) + usd
        for histograms, more in ((self.request_seconds, other.request_seconds),
                                 (self.attempt_seconds, other.attempt_seconds)):
            for label, histogram in more.items():
                histograms.setdefault(label, Histogram()).add(histogram)
        self.in_flight += other.in_flight


_SEP: Final = "\x1f"
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(WorkerCounts).decode


class Counts:
    """One worker's counts, fed by the gateway (requests) and its runs' hooks (attempts)."""

    def __init__(self, folder: Path | None = None, *, name: str | None = None) -> None:
        """``folder``: where the workers of one ``--workers N`` leave their counts (None: this
        worker serves alone); ``name`` this worker's file there (default: its process id)."""
        self.counts = WorkerCounts()
        self._folder = folder
        self._file = None if folder is None else folder / f"worker-{name or os.getpid()}.json"
        self._written_at = -math.inf
        self._dirty = False

    def request_started(self) -> None:
        self.counts.in_flight += 1

    def request_ended(self, api: str, model: str, status: int, seconds: float) -> None:
        """A request was answered (``status`` 0: the client hung up before any answer)."""
        counts = self.counts
        counts.in_flight -= 1
        label = _SEP.join((api, model, str(status)))
        counts.requests[label] = counts.requests.get(label, 0) + 1
        counts.request_seconds.setdefault(api, Histogram()).observe(seconds)
        self._changed()

    def attempt_ended(self, record: AttemptRecord) -> None:
        """An attempt ended (an answer, a failure, or ``cancelled``): the runs' ``attempt_ended`` hook."""
        counts, provider = self.counts, record.provider
        label = provider + _SEP + record.outcome
        counts.attempts[label] = counts.attempts.get(label, 0) + 1
        counts.attempt_seconds.setdefault(provider, Histogram()).observe(record.latency_ms / 1000.0)
        usage = record.usage
        for direction, tokens in (("input", usage.input_tokens), ("output", usage.output_tokens)):
            if tokens:
                key = provider + _SEP + direction
                counts.tokens[key] = counts.tokens.get(key, 0) + tokens
        counts.cost_usd[provider] = counts.cost_usd.get(provider, 0.0) + record.cost_usd
        self._changed()

    def limited(self, key_name: str, reason: str) -> None:
        """A client key's request was refused for its ``reason`` (``rpm`` or ``budget``)."""
        label = key_name + _SEP + reason
        self.counts.limited[label] = self.counts.limited.get(label, 0) + 1
        self._changed()

    def _changed(self) -> None:
        self._dirty = True
        if self._file is not None and time.monotonic() - self._written_at >= WRITE_EVERY_S:
            self.write()

    def write(self) -> None:
        """Leave these counts for the other workers (a worker of several; atomically)."""
        if self._file is None or not self._dirty:
            return
        self._written_at, self._dirty = time.monotonic(), False
        partial = self._file.with_suffix(".partial")
        with contextlib.suppress(OSError):  # figures are never worth failing a request for
            partial.write_bytes(_encode(self.counts))
            partial.replace(self._file)

    def all_workers(self) -> WorkerCounts:
        """Every worker's counts added up: this one's as they are now, the others' as last written."""
        total = WorkerCounts()
        if self._folder is not None:
            with contextlib.suppress(OSError):
                for path in self._folder.glob("worker-*.json"):
                    if path != self._file:
                        with contextlib.suppress(OSError, msgspec.DecodeError):
                            total.add(_decode(path.read_bytes()))
        total.add(self.counts)
        return total


def render(counts: WorkerCounts, circuits: Sequence[CircuitState], providers: Iterable[str]) -> bytes:
    """The Prometheus text exposition (format 0.0.4) of ``counts``, and of the breakers of
    ``providers`` (those ``circuits`` lacks are closed)."""
    out: list[str] = []
    _counter(out, "rmgr_requests_total", "Requests the gateway answered, by endpoint, model (route) and "
             "status (0: the client hung up first).", ("endpoint", "model", "status"), counts.requests)
    _histograms(out, "rmgr_request_duration_seconds", "Time from a request's arrival to its last byte, "
                "by endpoint.", "endpoint", counts.request_seconds)
    _gauge(out, "rmgr_requests_in_flight", "Requests being served now.", [((), counts.in_flight)])
    _counter(out, "rmgr_attempts_total", "Attempts sent to providers, by how they ended (ok, an error "
             "kind, or cancelled).", ("provider", "outcome"), counts.attempts)
    failures = {k: v for k, v in counts.attempts.items() if k.split(_SEP)[1] not in ("ok", "cancelled")}
    _counter(out, "rmgr_attempt_failures_total", "Attempts that failed, by provider and error kind.",
             ("provider", "kind"), failures)
    cancelled = {k.split(_SEP)[0]: v for k, v in counts.attempts.items() if k.split(_SEP)[1] == "cancelled"}
    _counter(out, "rmgr_attempt_cancellations_total", "Attempts cancelled (a lost race or hedge, a "
             "client that hung up); never failures.", ("provider",), cancelled)
    _histograms(out, "rmgr_attempt_duration_seconds", "Attempts' latency, from the request written to "
                "its end.", "provider", counts.attempt_seconds)
    _counter(out, "rmgr_tokens_total", "Tokens providers counted (or estimated), by direction.",
             ("provider", "direction"), counts.tokens)
    _counter(out, "rmgr_cost_usd_total", "Dollars spent at each provider (its prices in the policy).",
             ("provider",), counts.cost_usd)
    _counter(out, "rmgr_client_limited_total", "Client keys' requests refused with 429, by key name and "
             "reason (rpm or budget).", ("key", "reason"), counts.limited)
    stored = {c.provider: c for c in circuits}
    phases = ("closed", "open", "half_open")
    states = [
        ((name, phase), int(stored.get(name, CircuitState(provider=name)).state == phase))
        for name in sorted({*providers, *stored})
        for phase in phases
    ]
    _gauge(out, "rmgr_circuit_state", "Each provider's circuit breaker: 1 for its state now (shared by "
           "every process of the state).", states, ("provider", "state"))
    return ("\n".join(out) + "\n").encode()


def _counter(
    out: list[str], name: str, text: str, labels: tuple[str, ...], values: Mapping[str, float]
) -> None:
    out += [f"# HELP {name} {text}", f"# TYPE {name} counter"]
    for joined, value in sorted(values.items()):
        out.append(f"{name}{_labels(zip(labels, joined.split(_SEP), strict=True))} {_number(value)}")


def _gauge(
    out: list[str], name: str, text: str, values: Sequence[tuple[tuple[str, ...], float]],
    labels: tuple[str, ...] = (),
) -> None:
    out += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
    for items, value in values:
        out.append(f"{name}{_labels(zip(labels, items, strict=True))} {_number(value)}")


def _histograms(
    out: list[str], name: str, text: str, label: str, histograms: Mapping[str, Histogram]
) -> None:
    out += [f"# HELP {name} {text}", f"# TYPE {name} histogram"]
    for value, histogram in sorted(histograms.items()):
        running = 0
        for bound, count in zip((*LATENCY_BUCKETS_S, math.inf), histogram.buckets, strict=True):
            running += count
            le = "+Inf" if math.isinf(bound) else f"{bound:g}"
            out.append(f"{name}_bucket{_labels([(label, value), ('le', le)])} {running}")
        out.append(f"{name}_sum{_labels([(label, value)])} {_number(histogram.total_s)}")
        out.append(f"{name}_count{_labels([(label, value)])} {running}")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    written = ",".join(f'{key}="{_escape(value)}"' for key, value in pairs)
    return "{" + written + "}" if written else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))
