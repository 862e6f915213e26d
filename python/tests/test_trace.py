"""Traces: what `specdec run --trace` writes is what the Python API records for the same
generation (timings aside), and read_trace / summarize read and add it up."""

import json
import os
import subprocess
from pathlib import Path

import pytest

import specdec

from conftest import PROMPT  # noqa: F401  (the same fixtures)


def cli() -> str:
    path = os.environ.get("SPECDEC_CLI")
    if not path:
        pytest.skip("SPECDEC_CLI is not set (ctest sets it: tests/python/python.cmake)")
    return path


def test_cli_trace_equals_the_api_records(target: specdec.Model, tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    text = "the quick brown fox jumps over the lazy dog. the quick brown"
    subprocess.run([cli(), "run", "-m", target.path, "-p", text, "-n", "30", "--temp", "0",
                    "--ignore-eos", "-t", "2", "--draft", "ngram", "--k", "3", "--trace",
                    str(trace)], check=True, capture_output=True)
    records = specdec.read_trace(trace)
    r = target.generate(text, max_tokens=30, temperature=0, ignore_eos=True, drafter="ngram",
                        k=3, record_steps=True)
    assert r.steps is not None and len(records) == len(r.steps) == r.stats.steps
    for a, b in zip(records, r.steps):
        assert (a.step, a.pos, a.k, a.drafted, a.accepted, a.next, a.evidence) == \
               (b.step, b.pos, b.k, b.drafted, b.accepted, b.next, b.evidence)
        assert a.drafter == "ngram" and a.k_max == 3 and a.gen == 0
    (summary,) = specdec.summarize(records)
    assert summary.steps == r.stats.steps and summary.accepted == r.stats.accepted
    assert summary.drafted == r.stats.drafted
    assert abs(summary.tokens_per_step - r.stats.mean_accepted_len) < 1e-9


def test_read_trace_names_a_bad_line(tmp_path: Path) -> None:
    good = {"step": 0, "pos": 3, "k": 2, "drafted": [1, 2], "accepted": 1, "next": 5,
            "evidence": 0, "draft_ms": 0.1, "verify_ms": 1.0, "prompt": "p", "future": 1}
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + "{not json\n")
    with pytest.raises(ValueError, match=r"t.jsonl:3"):
        specdec.read_trace(path)
    path.write_text(json.dumps(good) + "\n")
    (rec,) = specdec.read_trace(path)
    assert rec.prompt == "p" and rec.tokens == 2  # unknown members are ignored
