#!/usr/bin/env python3
"""The official `openai` Python client against `specdec serve` on the default model: a chat,
a streamed chat whose deltas join to the same text, a completion, log-probabilities (chat and
completions, streamed and not, the same from a server with a layer-skip drafter) and n
choices (each equal to an n = 1 request with its reported seed). Exit 0 pass, 1 fail, 77 skip
(the openai module or the model file missing).

Usage: test_openai_client.py PATH/TO/specdec
"""
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

SKIP = 77


def model_path():
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.environ.get("SPECDEC_MODEL") or os.path.join(
        cache, "specdec", "SmolLM2-135M-Instruct.Q4_1.gguf")


class Server:
    """`specdec serve --port 0`: its URL from the serving line, ready once /health is 200."""

    def __init__(self, binary, model, extra=()):
        self.proc = subprocess.Popen([binary, "serve", "-m", model, "--port", "0", "-t", "2",
                                      "-c", "1024", *extra], stderr=subprocess.PIPE, text=True)
        self.stderr, self.url = [], None
        self.announced = threading.Event()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        if not self.announced.wait(60):
            self.kill()
            raise RuntimeError("no 'specdec: serving' line: " + "".join(self.stderr))
        self._wait_healthy(60)

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.stderr.append(line)
            m = re.match(r"specdec: serving \S+ on (http://\S+)$", line.rstrip("\n"))
            if m:
                self.url = m.group(1)
                self.announced.set()

    def _wait_healthy(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:  # 503 while loading raises HTTPError, an OSError
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"/health not 200 within {seconds} s")

    def terminate(self):
        """SIGTERM; the exit status."""
        self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            return "no exit within 30 s of SIGTERM"

    def kill(self):
        self.proc.kill()
        self.proc.wait()


def run_checks(client, model_id, check):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    chat = client.chat.completions.create(model=model_id, messages=messages, max_tokens=16,
                                          temperature=0)
    text = chat.choices[0].message.content
    check("chat: answers Paris", "Paris" in text, text)
    check("chat: finish_reason", chat.choices[0].finish_reason in ("stop", "length"),
          chat.choices[0].finish_reason)
    u = chat.usage
    check("chat: usage adds up", u.completion_tokens >= 1 and
          u.total_tokens == u.prompt_tokens + u.completion_tokens, u)

    stream = client.chat.completions.create(model=model_id, messages=messages, max_tokens=16,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    joined = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check("stream: deltas join to the chat text", joined == text, repr(joined))
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    check("stream: ends with the chat's finish_reason",
          finishes[-1] == chat.choices[0].finish_reason, finishes)
    check("stream: usage chunk", chunks[-1].usage is not None and
          chunks[-1].usage.completion_tokens == u.completion_tokens, chunks[-1].usage)

    comp = client.completions.create(model=model_id, prompt="The capital of France is",
                                     max_tokens=12, temperature=0, stop=["."])
    check("completion: text without the stop string",
          len(comp.choices[0].text) > 0 and "." not in comp.choices[0].text, comp.choices[0].text)


def logprob_entries(content):
    """(token, logprob, bytes, [(token, logprob)...]) of chat logprobs content entries."""
    return [(t.token, t.logprob, tuple(t.bytes or ()),
             [(a.token, a.logprob) for a in t.top_logprobs]) for t in content]


def logprob_checks(client, model_id, check):
    """Log-probabilities in OpenAI's shapes; their values for the drafter comparison."""
    messages = [{"role": "user", "content": "Name three colours."}]
    chat = client.chat.completions.create(model=model_id, messages=messages, max_tokens=12,
                                          temperature=0, logprobs=True, top_logprobs=3)
    content = chat.choices[0].logprobs.content
    entries = logprob_entries(content)
    check("logprobs: one entry per token", len(content) == chat.usage.completion_tokens,
          (len(content), chat.usage.completion_tokens))
    check("logprobs: 3 alternatives each", all(len(e[3]) == 3 for e in entries), entries[:2])
    check("logprobs: greedy picks the most likely token",
          all(e[0] == e[3][0][0] and e[1] == e[3][0][1] for e in entries), entries[:2])
    check("logprobs: ln p <= 0, alternatives descending",
          all(e[1] <= 0 and e[3][0][1] >= e[3][1][1] >= e[3][2][1] for e in entries), entries[:2])
    check("logprobs: bytes join to the text",
          b"".join(bytes(e[2]) for e in entries).decode("utf-8", "replace") ==
          chat.choices[0].message.content, chat.choices[0].message.content)
    stream = client.chat.completions.create(model=model_id, messages=messages, max_tokens=12,
                                            temperature=0, logprobs=True, top_logprobs=3,
                                            stream=True)
    streamed = [e for c in stream if c.choices and c.choices[0].logprobs
                for e in logprob_entries(c.choices[0].logprobs.content or [])]
    check("logprobs: streamed equal non-streamed", streamed == entries, streamed[:2])

    comp = client.completions.create(model=model_id, prompt="The capital of France is",
                                     max_tokens=8, temperature=0, logprobs=2)
    lp = comp.choices[0].logprobs
    check("completion logprobs: tokens, token_logprobs, top_logprobs, text_offset",
          len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) ==
          len(lp.text_offset) == comp.usage.completion_tokens, lp)
    check("completion logprobs: offsets into the text",
          all(comp.choices[0].text[off:].startswith(tok)
              for tok, off in zip(lp.tokens, lp.text_offset)), (lp.tokens, lp.text_offset))
    check("completion logprobs: the chosen token among its alternatives (greedy)",
          all(lp.top_logprobs[i][t] == lp.token_logprobs[i] and len(lp.top_logprobs[i]) == 2
              for i, t in enumerate(lp.tokens)), lp.top_logprobs)
    return entries, (lp.tokens, lp.token_logprobs, lp.top_logprobs)


def choice_checks(client, model_id, check):
    messages = [{"role": "user", "content": "Write a word."}]
    chat = client.chat.completions.create(model=model_id, messages=messages, max_tokens=8,
                                          temperature=1.0, seed=11, n=3)
    texts = [c.message.content for c in chat.choices]
    check("n: three choices, indexed", [c.index for c in chat.choices] == [0, 1, 2], chat.choices)
    seeds = chat.model_extra["specdec"]["seeds"]
    check("n: choice 0 keeps the seed", seeds[0] == 11, seeds)
    one_each = [client.chat.completions.create(model=model_id, messages=messages, max_tokens=8,
                                               temperature=1.0, seed=s) for s in seeds]
    check("n: each choice equals n = 1 with its seed",
          [o.choices[0].message.content for o in one_each] == texts, texts)
    check("n: usage counts the prompt once",
          chat.usage.prompt_tokens == one_each[0].usage.prompt_tokens and
          chat.usage.completion_tokens == sum(o.usage.completion_tokens for o in one_each),
          chat.usage)
    stream = client.chat.completions.create(model=model_id, messages=messages, max_tokens=8,
                                            temperature=1.0, seed=11, n=3, stream=True)
    joined = ["", "", ""]
    for c in stream:
        for ch in c.choices:
            joined[ch.index] += ch.delta.content or ""
    check("n: streamed choices join by index", joined == texts, joined)
    comp = client.completions.create(model=model_id, prompt="Once upon a time", max_tokens=6,
                                     temperature=1.0, seed=3, n=2)
    check("n: completions", len(comp.choices) == 2 and comp.choices[1].index == 1, comp.choices)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        import openai
    except ImportError:
        print("SKIP: the openai module is not installed (scripts/install-deps.sh)")
        return SKIP
    model = model_path()
    if not os.access(model, os.R_OK):
        print(f"SKIP: model {model} not present")
        return SKIP
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    failures = []

    def check(name, ok, detail):
        if not ok:
            failures.append(name)
            print(f"FAIL: {name}: {detail}")

    server = Server(sys.argv[1], model)
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0,
                               timeout=120)
        model_id = client.models.list().data[0].id
        check("models: the file's basename", model_id == os.path.basename(model)[:-5], model_id)
        run_checks(client, model_id, check)
        plain = logprob_checks(client, model_id, check)
        choice_checks(client, model_id, check)
        try:
            client.chat.completions.create(model=model_id, n=129,
                                           messages=[{"role": "user", "content": "x"}])
            check("n = 129 refused", False, "accepted")
        except openai.BadRequestError as e:
            check("n = 129: 400 naming n", e.body.get("param") == "n", e.body)
    except openai.OpenAIError as e:
        check("no client error", False, f"{type(e).__name__}: {e}")
        plain = None
    finally:
        rc = server.terminate()
    check("SIGTERM: exit 0", rc == 0, f"{rc}; server stderr:\n" + "".join(server.stderr[-30:]))
    # the same log-probabilities from a server that drafts (the target's values, bit for bit)
    drafting = Server(sys.argv[1], model, ["--draft", "layerskip"])
    try:
        client = openai.OpenAI(base_url=drafting.url + "/v1", api_key="none", max_retries=0,
                               timeout=120)
        drafted = logprob_checks(client, model_id, check)
        check("logprobs: identical with a layer-skip drafter", drafted == plain,
              (drafted, plain))
    except openai.OpenAIError as e:
        check("no client error (drafting server)", False, f"{type(e).__name__}: {e}")
    finally:
        rc = drafting.terminate()
    check("SIGTERM: exit 0 (drafting server)", rc == 0, rc)
    print(f"openai_client (openai {openai.__version__}): {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
