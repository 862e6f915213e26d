"""Per-step traces: the JSON-lines files ``specdec run|chat|bench --trace FILE`` writes, one
record per speculative step, and a summary per run (docs/design-notes.md, "Per-step
observation and traces")."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple, Union

from .types import StepRecord

_FIELDS = {f.name for f in fields(StepRecord)}


def read_trace(path: Union[str, Path]) -> List[StepRecord]:
    """Every record of a trace file, in order. Raises ValueError naming the line for a line
    that is not a step record."""
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                records.append(StepRecord(**{k: v for k, v in d.items() if k in _FIELDS}))
            except (json.JSONDecodeError, TypeError) as e:
                raise ValueError(f"{path}:{number}: not a step record: {e}") from e
    return records


@dataclass(frozen=True)
class TraceSummary:
    """Steps of one group of records (by default one run: prompt, drafter, k_max, repeat and
    generation). ``tokens_per_step`` is the mean accepted length per target forward."""

    key: Tuple
    steps: int
    drafted: int
    accepted: int
    tokens: int
    acceptance_rate: float
    tokens_per_step: float
    draft_ms: float
    verify_ms: float


def summarize(records: Iterable[StepRecord],
              by: Sequence[str] = ("prompt", "drafter", "k_max", "repeat", "gen", "request")
              ) -> List[TraceSummary]:
    """Group records by the fields ``by`` (in first-seen order) and add each group up."""
    groups: Dict[Tuple, List[StepRecord]] = {}
    for r in records:
        groups.setdefault(tuple(getattr(r, name) for name in by), []).append(r)
    out = []
    for key, steps in groups.items():
        drafted = sum(len(s.drafted) for s in steps)
        accepted = sum(s.accepted for s in steps)
        tokens = sum(s.tokens for s in steps)
        out.append(TraceSummary(key, len(steps), drafted, accepted, tokens,
                                accepted / drafted if drafted else 0.0, tokens / len(steps),
                                sum(s.draft_ms for s in steps), sum(s.verify_ms for s in steps)))
    return out
