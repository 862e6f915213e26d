#!/usr/bin/env python3
"""The official `openai` Python client against `specdec serve` on the default model: a chat,
a streamed chat whose deltas join to the same text, and a completion. Exit 0 pass, 1 fail,
77 skip (the openai module or the model file missing).

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

    def __init__(self, binary, model):
        self.proc = subprocess.Popen([binary, "serve", "-m", model, "--port", "0", "-t", "2",
                                      "-c", "1024"], stderr=subprocess.PIPE, text=True)
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
    except openai.OpenAIError as e:
        check("no client error", False, f"{type(e).__name__}: {e}")
    finally:
        rc = server.terminate()
    check("SIGTERM: exit 0", rc == 0, f"{rc}; server stderr:\n" + "".join(server.stderr[-30:]))
    print(f"openai_client (openai {openai.__version__}): {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
