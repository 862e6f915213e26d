"""Generation through the package: greedy output is the target's for every drafter (built-in,
across vocabularies, written in Python); seeds reproduce; streaming yields the same text;
per-step records add up to the statistics; a Python drafter's failure is a DrafterError."""

from typing import List

import pytest

import specdec

from conftest import PROMPT


class Oracle(specdec.Drafter):
    """Knows the target's output; the last token of every third proposal is wrong."""

    future: List[int] = []

    def __init__(self) -> None:
        self.calls = 0
        self.began = False

    def begin(self, prompt: List[int]) -> None:
        assert prompt == PROMPT
        self.began = True

    def propose(self, context: List[int], k: int) -> specdec.Proposal:
        assert self.began and context[:len(PROMPT)] == PROMPT
        self.calls += 1
        at = len(context) - len(PROMPT)
        tokens = list(self.future[at:at + k])
        if tokens and self.calls % 3 == 0:
            tokens[-1] = (tokens[-1] + 1) % 320
        return specdec.Proposal(tokens, evidence=2)


def test_greedy_is_the_targets_for_every_drafter(target: specdec.Model,
                                                 spm_draft: specdec.Model) -> None:
    ref = target.generate(PROMPT, max_tokens=40, temperature=0, ignore_eos=True)
    assert len(ref.tokens) == 40 and ref.stop_reason == "max_tokens"
    Oracle.future = ref.tokens
    for drafter, kw in [("ngram", {}), ("layerskip:1", {}), ("xvocab", {"draft_model": spm_draft}),
                        (Oracle, {})]:
        r = target.generate(PROMPT, max_tokens=40, temperature=0, ignore_eos=True,
                            drafter=drafter, k=4, **kw)
        assert r.tokens == ref.tokens, drafter
        assert r.text == ref.text
    r = target.generate(PROMPT, max_tokens=40, temperature=0, ignore_eos=True, drafter=Oracle,
                        k=4, adaptive=False)
    assert 0 < r.stats.accepted < r.stats.drafted, "the oracle's drafts: accepted and rejected"
    assert r.stats.mean_accepted_len > 2


def test_token_trees_are_the_targets(target: specdec.Model) -> None:
    ref = target.generate(PROMPT, max_tokens=30, temperature=0, ignore_eos=True)
    for drafter, tree in [("layerskip", "3x2x1"), ("layerskip", "dynamic:8"), ("ngram", "4x2x1")]:
        r = target.generate(PROMPT, max_tokens=30, temperature=0, ignore_eos=True,
                            drafter=drafter, tree=tree)
        assert r.tokens == ref.tokens, (drafter, tree)
        assert r.stats.drafted > 0, (drafter, tree)
    with pytest.raises(specdec.SpecdecError) as e:
        target.generate(PROMPT, max_tokens=4, drafter="layerskip", tree="0x2")
    assert "width '0' at level 1" in str(e.value)


class TreeOracle(specdec.Drafter):
    """Proposes a tree: a wrong first token, then the target's next k tokens as its sibling
    chain; records the paths the target kept."""

    future: List[int] = []

    def __init__(self) -> None:
        self.paths: List[List[int]] = []

    def propose(self, context: List[int], k: int) -> specdec.Proposal:
        at = len(context) - len(PROMPT)
        good = list(self.future[at:at + k])
        if not good:
            return specdec.Proposal([])
        tokens = [(good[0] + 1) % 320] + good
        parents = [-1, -1] + list(range(1, len(good)))
        return specdec.Proposal(tokens, parents=parents)

    def accept_path(self, tokens: List[int], next_token: int) -> None:
        self.paths.append(tokens)


def test_a_python_drafter_proposes_trees(target: specdec.Model) -> None:
    ref = target.generate(PROMPT, max_tokens=30, temperature=0, ignore_eos=True)
    TreeOracle.future = ref.tokens
    d = TreeOracle()
    r = target.generate(PROMPT, max_tokens=30, temperature=0, ignore_eos=True, drafter=d,
                        tree="dynamic:8", k=3)
    assert r.tokens == ref.tokens
    assert r.stats.mean_accepted_len > 3.0, r.stats.mean_accepted_len  # the sibling chain wins
    assert d.paths and all(len(p) == 3 for p in d.paths[:-1]), d.paths
    with pytest.raises(specdec.DrafterError) as e:  # a tree where chains are drafted
        target.generate(PROMPT, max_tokens=4, drafter=TreeOracle)
    assert "pass tree=" in str(e.value.__cause__), e.value.__cause__


def test_sampling_is_reproducible_and_drafter_independent(target: specdec.Model) -> None:
    a = target.generate(PROMPT, max_tokens=32, temperature=0.9, seed=3, ignore_eos=True)
    b = target.generate(PROMPT, max_tokens=32, temperature=0.9, seed=3, ignore_eos=True,
                        drafter="ngram")
    c = target.generate(PROMPT, max_tokens=32, temperature=0.9, seed=4, ignore_eos=True)
    assert a.tokens == b.tokens and a.tokens != c.tokens


def test_sampled_q_trees_are_reproducible(target: specdec.Model) -> None:
    kw = dict(max_tokens=24, temperature=0.9, ignore_eos=True, drafter="layerskip", tree="3x2x1",
              tree_sample="q")
    a, b = target.generate(PROMPT, seed=5, **kw), target.generate(PROMPT, seed=5, **kw)
    assert a.tokens == b.tokens and a.stats.drafted > 0
    with pytest.raises(ValueError):
        target.generate(PROMPT, max_tokens=4, drafter="layerskip", tree="2x1", tree_sample="best")


def test_steps_add_up_to_the_statistics(target: specdec.Model) -> None:
    seen: List[specdec.StepRecord] = []
    ref = target.generate(PROMPT, max_tokens=40, temperature=0, ignore_eos=True)
    Oracle.future = ref.tokens
    r = target.generate(PROMPT, max_tokens=40, temperature=0, ignore_eos=True, drafter=Oracle,
                        record_steps=True, on_step=seen.append)
    assert r.steps == seen and len(seen) == r.stats.steps
    assert [s.step for s in seen] == list(range(len(seen)))
    assert sum(len(s.drafted) for s in seen) == r.stats.drafted
    assert sum(s.accepted for s in seen) == r.stats.accepted
    assert all(s.evidence == 2 for s in seen if s.drafted)
    pos = len(PROMPT)
    for s in seen:
        assert s.pos == pos and s.drafted[:s.accepted] == r.tokens[pos - len(PROMPT):][:s.accepted]
        pos += s.tokens
    hist = [0] * len(r.stats.accepted_hist)
    for s in seen:
        hist[s.accepted] += 1
    assert hist == r.stats.accepted_hist


def test_stream_yields_the_generation(target: specdec.Model) -> None:
    ref = target.generate(PROMPT, max_tokens=24, temperature=0, ignore_eos=True)
    stream = target.stream(PROMPT, max_tokens=24, temperature=0, ignore_eos=True, drafter="ngram")
    chunks = list(stream)
    assert [c.token for c in chunks if c.token >= 0] == ref.tokens
    assert "".join(c.text for c in chunks) == ref.text
    assert stream.result is not None and stream.result.tokens == ref.tokens


def test_leaving_a_stream_early_stops_it(target: specdec.Model) -> None:
    with target.stream(PROMPT, max_tokens=200, temperature=0, ignore_eos=True) as stream:
        first = next(iter(stream))
    assert first.token >= 0
    assert stream.result is not None and stream.result.stop_reason == "callback"
    assert len(stream.result.tokens) < 200


def test_python_drafter_failures(target: specdec.Model) -> None:
    class Broken(specdec.Drafter):
        def propose(self, context: List[int], k: int) -> List[int]:
            raise KeyError("no idea")

    with pytest.raises(specdec.DrafterError) as e:
        target.generate(PROMPT, max_tokens=8, temperature=0, drafter=Broken)
    assert isinstance(e.value.__cause__, KeyError) and "no idea" in str(e.value)

    class TooMany(specdec.Drafter):
        def propose(self, context: List[int], k: int) -> List[int]:
            return [1] * (k + 1)

    with pytest.raises(specdec.SpecdecError) as e:
        target.generate(PROMPT, max_tokens=8, temperature=0, drafter=TooMany, k=3)
    assert e.value.status == "SD_ERR_INVALID_ARG" and "n = 4" in e.value.message

    class OutOfVocab(specdec.Drafter):
        def propose(self, context: List[int], k: int) -> List[int]:
            return [320]

    with pytest.raises(specdec.SpecdecError) as e:
        target.generate(PROMPT, max_tokens=8, temperature=0, drafter=OutOfVocab)
    assert "token 320" in e.value.message


def test_bad_arguments_are_refused(target: specdec.Model, spm_draft: specdec.Model) -> None:
    with pytest.raises(specdec.SpecdecError) as e:
        target.generate(PROMPT, drafter="ngram:0")
    assert e.value.status == "SD_ERR_INVALID_ARG" and "'ngram:0'" in e.value.message
    with pytest.raises(specdec.SpecdecError) as e:
        target.generate(PROMPT, drafter="model", draft_model=spm_draft)
    assert e.value.status == "SD_ERR_VOCAB_MISMATCH" and "xvocab" in e.value.message
    with pytest.raises(specdec.SpecdecError) as e:
        target.generate(PROMPT, max_tokens=0)
    assert "max_tokens = 0" in e.value.message
    with pytest.raises(TypeError):
        target.generate(PROMPT, drafter=42)  # type: ignore[arg-type]


def test_real_model_with_a_python_drafter(smol: specdec.Model) -> None:
    prompt = smol.chat([("user", "Repeat this list twice: red, green, blue, yellow.")])

    class Lookup(specdec.Drafter):
        def propose(self, context: List[int], k: int) -> List[int]:
            for j in range(len(context) - 2, -1, -1):
                if context[j] == context[-1]:
                    return context[j + 1:j + 1 + k]
            return []

    ref = smol.generate(prompt, parse_special=True, max_tokens=32, temperature=0)
    r = smol.generate(prompt, parse_special=True, max_tokens=32, temperature=0, drafter=Lookup)
    assert r.tokens == ref.tokens and r.text == ref.text
