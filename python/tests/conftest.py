"""Fixtures: synthetic models written by the C test helper ($SPECDEC_PY_HELPER, built with
the tests: tests/python/py_helper.c), and the cached SmolLM2 file for the tests that need a
real model (skipped, saying so, when it is not cached)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

import specdec


def helper() -> str:
    path = os.environ.get("SPECDEC_PY_HELPER")
    if not path:
        pytest.skip("SPECDEC_PY_HELPER is not set (ctest sets it: tests/python/python.cmake)")
    return path


def write_synth(path: Path, tokenizer: str = "gpt2", n_vocab: int = 320, seed: int = 7) -> Path:
    subprocess.run([helper(), "synth", str(path), tokenizer, str(n_vocab), str(seed)], check=True)
    return path


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def target(synth_dir: Path) -> Iterator[specdec.Model]:
    """A 2-layer synthetic llama with a byte-level BPE tokenizer (vocab 320)."""
    with specdec.Model(write_synth(synth_dir / "target.gguf"), n_threads=2, n_ctx=256) as m:
        yield m


@pytest.fixture(scope="session")
def spm_draft(synth_dir: Path) -> Iterator[specdec.Model]:
    """A synthetic model with a SentencePiece tokenizer (vocab 400): another vocabulary."""
    path = write_synth(synth_dir / "spm.gguf", "llama", 400, 8)
    with specdec.Model(path, n_threads=2, n_ctx=256) as m:
        yield m


def real_model_path() -> Path:
    env = os.environ.get("SPECDEC_MODEL")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "specdec" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smol() -> Iterator[specdec.Model]:
    path = real_model_path()
    if not path.is_file():
        pytest.skip(f"{path} is not cached (scripts/fetch-model.sh fetches it)")
    with specdec.Model(path, n_threads=2, n_ctx=1024) as m:
        yield m


PROMPT = [40, 41, 42, 43, 40, 41, 42, 43, 40, 41, 44, 45, 40, 41]
