"""The example script (python/examples/compare_drafters.py) runs on a bench prompt and
prints its table with every speculative output exact; its trace reads back."""

import subprocess
import sys
from pathlib import Path

import specdec

ROOT = Path(__file__).resolve().parents[2]


def test_compare_drafters_prints_an_exact_table(target: specdec.Model, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "python/examples/compare_drafters.py"), "-m", target.path,
         "--limit", "1", "-n", "12", "-t", "2", "--trace", str(tmp_path / "t.jsonl")],
        check=True, capture_output=True, text=True).stdout
    rows = {line.split()[0] for line in out.splitlines()[2:]}
    assert {"target-only", "ngram", "layerskip", "python"} <= rows, out
    assert "NO" not in out and out.count("yes") == 6, out
    records = specdec.read_trace(tmp_path / "t.jsonl")
    assert {r.drafter for r in records} == {"target-only", "ngram", "layerskip", "python lookup",
                                            "ngram tree", "layerskip tree", "ls dynamic:10"}
