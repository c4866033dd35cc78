"""``rmgr history`` and ``rmgr cache``: saved analyses and the answer cache, in the state store."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import cyclopts
import msgspec
from returns.result import Failure, Success

from rmcli import figures
from rmcli.commands import read_records
from rmcli.config import ConfigError, cache_ttl_ms
from rmcli.environment import load_environment
from rmcli.output import emit_json, json_ready, safe_text
from rmcli.state.base import HISTORY_ID_MIN_PREFIX, HistoryEntry, State
from rmcli.tables import Column, fits, print_table
from rmcore.report import render_markdown
from rmcore.timespec import parse_since

__all__ = ["cache_clear", "cache_stats", "clear", "export", "list_", "show", "stats"]


def _when(ms: int | None, *, seconds: bool = True) -> str:
    if ms is None:
        return "-"
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if seconds else moment.strftime("%Y-%m-%d %H:%M")


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _since(option: str, text: str | None) -> int | None:
    if text is None:
        return None
    match parse_since(text, int(time.time() * 1000)):
        case Success(value):
            return int(value)
        case Failure(problem):
            raise ConfigError(f"{option}: {problem}")
    raise AssertionError("unreachable")


def _entry_json(e: HistoryEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "agentId": e.agent_id,
        "question": e.question,
        "status": e.status,
        "overallConfidence": e.overall_confidence,
        "timestamp": _iso(e.created_ms),
    }


def list_(
    *,
    agent_id: str | None = "default",
    all_agents: bool = False,
    min_confidence: float | None = None,
    since: str | None = None,
    limit: int | None = 20,
    json: bool = False,
) -> int:
    """List saved analyses, newest first.

    Each with its id (for history show), time, status, overall confidence and question. Exit
    code 0, 2 for a bad option or a state that cannot be read.

    Example: rmgr history list --since 7d --min-confidence 0.7

    Parameters
    ----------
    agent_id
        Whose analyses.
    all_agents
        Every agent's analyses.
    min_confidence
        Only analyses whose overall confidence is at least this (0 to 1).
    since
        Only analyses since: 30m, 24h, 7d, 2w, an ISO date, or "all".
    limit
        At most this many (0 for no limit).
    json
        Print a JSON array.
    """
    if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
        raise ConfigError(f"--min-confidence must be between 0 and 1 (got {min_confidence})")
    if limit is not None and limit < 0:
        raise ConfigError(f"--limit must be 0 or more (got {limit})")
    since_ms = _since("--since", since)
    entries = read_records(
        lambda state: state.history.list(
            None if all_agents else agent_id,
            min_confidence=min_confidence,
            since_ms=since_ms,
            limit=limit or None,
        )
    )
    if json:
        emit_json([_entry_json(e) for e in entries])
        return 0
    if not entries:
        print("No saved analyses.")
        return 0
    _print_entries(entries, all_agents)
    return 0


QUESTION_WIDTH = 70
"""The most of a question a row of ``history list`` shows (``history show`` has it whole)."""


def _clip(text: str, limit: int) -> str:
    """``text`` on one line, at most ``limit`` characters (cut with "…")."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _print_entries(entries: list[HistoryEntry], all_agents: bool) -> None:
    """The saved analyses as a table: every column when it fits; else the minutes of the time
    (UTC), the agent only when several are listed, ``Conf.`` for the confidence header."""
    headers: list[str | Column] = [
        Column("Id", wrap=False),
        Column("When", wrap=False),
        Column("Agent", wrap=False),
        Column("Status", wrap=False),
        Column("Confidence", wrap=False),
        Column("Question", wrap=True),
    ]
    rows = [
        [
            e.id,
            _when(e.created_ms),
            e.agent_id,
            e.status,
            figures.confidence(e.overall_confidence),
            _clip(e.question, QUESTION_WIDTH),
        ]
        for e in entries
    ]
    if fits(headers, rows):
        print_table("Saved analyses", headers, rows)
        return
    headers[1] = Column("When (UTC)", wrap=False)
    headers[4] = Column("Conf.", wrap=False)
    for row, e in zip(rows, entries, strict=True):
        row[1] = _when(e.created_ms, seconds=False)
    if all_agents:
        print_table("Saved analyses", headers, rows)
        return
    # One agent's analyses: its name goes in the title instead of a column.
    del headers[2]
    for row in rows:
        del row[2]
    print_table(f"Saved analyses of {entries[0].agent_id}", headers, rows)


def _load(store_entry_id: str) -> tuple[HistoryEntry, dict[str, Any]]:
    async def find(state: State) -> tuple[list[str], tuple[HistoryEntry, bytes] | None]:
        matches = await state.history.resolve(store_entry_id)
        return matches, (await state.history.get(matches[0]) if len(matches) == 1 else None)

    matches, found = read_records(find)
    if not matches:
        hint = (
            f"give at least {HISTORY_ID_MIN_PREFIX} characters of the id"
            if len(store_entry_id.strip()) < HISTORY_ID_MIN_PREFIX
            else "see rmgr history list"
        )
        raise ConfigError(f"no saved analysis has the id {store_entry_id!r} ({hint})")
    if len(matches) > 1:
        raise ConfigError(
            f"{store_entry_id!r} matches several analyses: {', '.join(matches)}; give more of the id"
        )
    if found is None:
        raise ConfigError(f"no saved analysis has the id {store_entry_id!r}")
    entry, payload = found
    return entry, msgspec.json.decode(payload)


def show(entry_id: str, /, *, format: Literal["json", "markdown"] = "markdown") -> int:
    """Show one saved analysis in full.

    Exit code 0, 2 when no saved analysis has that id (or the prefix is not unique).

    Example: rmgr history show 3f2a --format json

    Parameters
    ----------
    entry_id
        Its id (or a unique prefix of at least 4 characters).
    format
        markdown (default) or json (the analysis as ``rmgr analyze --format json`` printed it).
    """
    entry, document = _load(entry_id)
    if format == "json":
        emit_json(document)
        return 0
    from rmcore.report import PerspectiveResult

    results = []
    for p in document.get("perspectives", []):
        meta = p.get("metadata") or {}
        usage = meta.get("usage") or {}
        error = p.get("error") or None
        results.append(
            PerspectiveResult(
                id=p["id"],
                perspective=p["perspective"],
                analysis=p.get("analysis"),
                recommendation=p.get("recommendation"),
                confidence=p.get("confidence"),
                reasoning=p.get("reasoning"),
                provider=meta.get("provider"),
                model=meta.get("model"),
                input_tokens=usage.get("inputTokens", 0),
                output_tokens=usage.get("outputTokens", 0),
                cost_usd=meta.get("costUsd", 0.0),
                latency_ms=meta.get("latencyMs", 0.0),
                cached=meta.get("cached", False),
                error_kind=error.get("kind") if error else None,
                error_message=error.get("message") if error else None,
                flags=tuple(p.get("flags", ())),
            )
        )
    section, decided = _synthesis_section(document.get("synthesis"))
    text = render_markdown(
        document.get("question", entry.question),
        results,
        status=document.get("status", entry.status),
        overall=document.get("overallConfidence"),
        summary="" if decided else document.get("summary", ""),
        execution_ms=document.get("executionTime", 0.0),
        cost_usd=(document.get("usage") or {}).get("costUsd", 0.0),
        synthesis=section,
    )
    sys.stdout.write(safe_text(text) + "\n")
    return 0


def _synthesis_section(saved: Any) -> tuple[str, bool]:
    """The markdown of a saved analysis's synthesis (none for analyses saved without one), and
    whether it decided."""
    from rmcli.synthesis_view import synthesis_failed_markdown, synthesis_markdown
    from rmcore.synthesis import Synthesis

    if not isinstance(saved, dict):
        return "", False
    error = saved.get("error")
    if isinstance(error, dict) or saved.get("decision") is None:
        kind, message = (error.get("kind"), error.get("message")) if isinstance(error, dict) else (None, None)
        return synthesis_failed_markdown(str(kind or "failed"), str(message or "")), False
    try:
        decided = Synthesis(
            decision=saved["decision"],
            recommendation=saved.get("recommendation") or "",
            confidence=saved.get("confidence"),
            consensus=tuple(saved.get("consensus") or ()),
            conflicts=tuple(saved.get("conflicts") or ()),
            blind_spots=tuple(saved.get("blindSpots") or ()),
            conditions=tuple(saved.get("conditions") or ()),
        )
    except (TypeError, ValueError):
        return "", False
    return synthesis_markdown(decided), True


def stats(*, agent_id: str | None = "default", all_agents: bool = False, json: bool = False) -> int:
    """Count saved analyses by status, with their confidences.

    The overall confidences' average, lowest and highest. Exit code 0.

    Example: rmgr history stats --all-agents

    Parameters
    ----------
    agent_id
        Whose analyses.
    all_agents
        Every agent's analyses.
    json
        Print a JSON object.
    """
    s = read_records(lambda state: state.history.stats(None if all_agents else agent_id))
    doc = {
        "agentId": None if all_agents else agent_id,
        "totalAnalyses": s.total,
        "byStatus": s.by_status,
        "withConfidence": s.with_confidence,
        "averageConfidence": s.average_confidence,
        "minConfidence": s.min_confidence,
        "maxConfidence": s.max_confidence,
        "first": _iso(s.first_ms),
        "last": _iso(s.last_ms),
    }
    if json:
        emit_json(doc)
        return 0

    conf = figures.confidence
    rows = [
        ["Analyses", str(s.total)],
        ["By status", ", ".join(f"{k}: {v}" for k, v in s.by_status.items()) or "-"],
        ["Average confidence", conf(s.average_confidence)],
        ["Lowest / highest", f"{conf(s.min_confidence)} / {conf(s.max_confidence)}"],
        ["First", _when(s.first_ms)],
        ["Last", _when(s.last_ms)],
    ]
    print_table(f"History of {'every agent' if all_agents else agent_id}", ["", ""], rows)
    return 0


def export(
    file: Annotated[Path, cyclopts.Parameter(allow_leading_hyphen=True)],
    /,
    *,
    agent_id: str = "default",
    force: bool = False,
) -> int:
    """Write an agent's analyses to a JSON file.

    The file holds {agentId, exportedAt, totalAnalyses, analyses}. Exit code 0, 2 when the
    file exists (without --force) or cannot be written.

    Example: rmgr history export analyses.json --agent-id ci

    Parameters
    ----------
    file
        Where to write (use - for standard output).
    agent_id
        Whose analyses.
    force
        Overwrite the file if it exists.
    """
    entries = read_records(lambda state: state.history.export(agent_id))
    analyses = [{"id": e.id, **msgspec.json.decode(payload)} for e, payload in entries]
    doc = {
        "agentId": agent_id,
        "exportedAt": _iso(int(time.time() * 1000)),
        "totalAnalyses": len(analyses),
        "analyses": analyses,
    }
    data = msgspec.json.format(msgspec.json.encode(json_ready(doc)), indent=2)
    if str(file) == "-":
        sys.stdout.write(data.decode() + "\n")
        return 0
    if file.exists() and not force:
        raise ConfigError(f"{file} exists; add --force to overwrite it")
    try:
        file.write_bytes(data + b"\n")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot write ({exc.strerror})") from None
    print(f"Exported {len(analyses)} analyses of {agent_id} to {file}")
    return 0


def clear(
    *,
    agent_id: str | None = "default",
    all_agents: bool = False,
    before: str | None = None,
    yes: bool = False,
) -> int:
    """Delete saved analyses (needs --yes).

    Of one agent, or all; optionally only those before a date. Exit code 0, 2 without --yes.

    Example: rmgr history clear --before 30d --yes

    Parameters
    ----------
    agent_id
        Whose analyses.
    all_agents
        Every agent's analyses.
    before
        Only analyses older than this: an ISO date, or an age such as 7d.
    yes
        Confirm the deletion (required: saved analyses cannot be brought back).
    """
    before_ms = _since("--before", before)
    who = "every agent" if all_agents else agent_id
    if not yes:
        raise ConfigError(f"this deletes saved analyses of {who} for good; add --yes to confirm")
    removed = read_records(
        lambda state: state.history.clear(None if all_agents else agent_id, before_ms=before_ms)
    )
    print(f"Deleted {removed} saved analyses of {who}" + (f" before {before}" if before else ""))
    return 0


def cache_stats(*, json: bool = False) -> int:
    """Show the answer cache: entries, hits, misses, size.

    Entries are counted as fresh while younger than ANALYSIS_CACHE_TTL_MS. Exit code 0.

    Example: rmgr cache stats --json

    Parameters
    ----------
    json
        Print a JSON object.
    """
    ttl = cache_ttl_ms(load_environment())
    s = read_records(lambda state: state.cache.stats(int(time.time() * 1000), ttl))
    doc = {
        "entries": s.entries,
        "freshEntries": s.fresh_entries,
        "hits": s.hits,
        "misses": s.misses,
        "hitRate": s.hit_rate,
        "oldest": _iso(s.oldest_ms),
        "newest": _iso(s.newest_ms),
        "bytes": s.bytes,
        "ttlMs": ttl,
    }
    if json:
        emit_json(doc)
        return 0
    rate = "-" if s.hit_rate is None else f"{s.hit_rate * 100:.1f}%"
    rows = [
        ["Entries (fresh)", f"{s.entries} ({s.fresh_entries})"],
        ["Hits / misses", f"{s.hits} / {s.misses} ({rate})"],
        ["Oldest", _when(s.oldest_ms)],
        ["Newest", _when(s.newest_ms)],
        ["Size", f"{s.bytes} bytes"],
        ["TTL", f"{figures.duration(ttl)} (ANALYSIS_CACHE_TTL_MS)"],
    ]
    print_table("Answer cache", ["", ""], rows)
    return 0


def cache_clear() -> int:
    """Remove every cached answer.

    The hit and miss counters start again from zero. Exit code 0.

    Example: rmgr cache clear
    """
    removed = read_records(lambda state: state.cache.clear())
    print(f"Removed {removed} cached answers")
    return 0
