"""The serving engine through the package: requests from several threads equal the same
generation alone; each request gets its own Python drafter; streaming; cancellation;
step records numbered by request; metrics."""

import threading
from typing import Dict, List

import pytest

import specdec

from conftest import PROMPT


class Lookup(specdec.Drafter):
    made = 0

    def __init__(self) -> None:
        Lookup.made += 1
        self.context: List[int] = []

    def begin(self, prompt: List[int]) -> None:
        self.context = list(prompt)

    def propose(self, context: List[int], k: int) -> List[int]:
        assert context == self.context, "each request has its own drafter"
        for j in range(len(context) - 2, -1, -1):
            if context[j] == context[-1]:
                self.proposal = context[j + 1:j + 1 + k]
                return self.proposal
        self.proposal = []
        return []

    def accept(self, n_accepted: int, next_token: int) -> None:
        self.context += self.proposal[:n_accepted] + [next_token]


def test_concurrent_requests_equal_alone(target: specdec.Model) -> None:
    steps: Dict[int, List[specdec.StepRecord]] = {}
    lock = threading.Lock()

    def on_step(s: specdec.StepRecord) -> None:
        with lock:
            steps.setdefault(s.request, []).append(s)

    Lookup.made = 0
    settings = [dict(max_tokens=20 + 3 * i, temperature=0.8 if i % 2 else 0.0, seed=i,
                     ignore_eos=True) for i in range(6)]
    with specdec.Engine(target, drafter=Lookup, k=4, on_step=on_step) as engine:
        results: List[specdec.Result] = [None] * 6  # type: ignore[list-item]

        def client(i: int) -> None:
            results[i] = engine.submit(PROMPT[:10 + i % 4], **settings[i]).wait(timeout=120)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        m = engine.metrics()
    assert m.submitted == 6 and m.finished["max_tokens"] == 6 and m.generated_tokens == \
        sum(len(r.tokens) for r in results)
    assert Lookup.made == 6 + 1, "one drafter per request, and one to check the spec"
    assert sorted(steps) == list(range(1, 7))
    assert sum(len(v) for v in steps.values()) == sum(r.stats.steps for r in results)
    for i, r in enumerate(results):
        alone = target.generate(PROMPT[:10 + i % 4], drafter=Lookup, k=4, **settings[i])
        assert r.tokens == alone.tokens


def test_streaming_and_cancel(target: specdec.Model) -> None:
    with specdec.Engine(target, drafter="ngram") as engine:
        ref = target.generate(PROMPT, max_tokens=24, temperature=0, ignore_eos=True)
        req = engine.submit(PROMPT, max_tokens=24, temperature=0, ignore_eos=True, stream=True)
        chunks = list(req)
        assert [c.token for c in chunks if c.token >= 0] == ref.tokens
        assert req.wait().tokens == ref.tokens
        long = engine.submit(PROMPT, max_tokens=400, temperature=0, ignore_eos=True)
        long.cancel()
        with pytest.raises(specdec.SpecdecError) as e:
            long.wait(timeout=60)
        assert e.value.status == "SD_ERR_CANCELLED" and e.value.result is not None
        assert e.value.result.stop_reason == "cancelled"


def test_engine_refusals(target: specdec.Model) -> None:
    with pytest.raises(TypeError):
        specdec.Engine(target, drafter=Lookup())  # an instance would be shared by requests
    with specdec.Engine(target, max_queued=0, max_active=1) as engine:
        with pytest.raises(specdec.SpecdecError) as e:
            engine.submit(PROMPT, max_tokens=0)
        assert e.value.status == "SD_ERR_INVALID_ARG"
