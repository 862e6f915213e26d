#!/usr/bin/env python3
"""The fuzz corpus of the chat templates (tests/fuzz/chat/) against jinja2.

For every corpus input that uses one of the four real templates (byte 0 in 0..3: SmolLM2,
Qwen2.5, Llama-3, Llama-2), has at least one message, whose roles are system/user/assistant
(the API's domain) and whose text is UTF-8, the C rendering (printed by the harness with FUZZ_CHAT_PRINT=1, which also
prints the template it used) must equal what jinja2 renders from the same template, as
transformers' apply_chat_template does it (trim_blocks, lstrip_blocks, raise_exception);
a template that raises must be refused by C too. Exit 0 when all agree, 1 on a mismatch,
77 (CTest skip, with the reason) without jinja2.

usage: chat_jinja.py PATH/TO/fuzz_chat CORPUS_DIR
"""
import os
import subprocess
import sys

ROLES = {"s": "system", "u": "user", "a": "assistant"}


def parse(data):
    """(template index, add_generation_prompt, bos, eos, messages) of one input, or None."""
    if len(data) < 2 or (data[0] & 7) > 3:
        return None
    opts = data[1]

    def take(b):  # the harness's fuzz_field: up to the next NUL, which is consumed
        i = b.find(b"\0")
        return (b, b"") if i < 0 else (b[:i], b[i + 1:])

    rest, msgs = data[2:], []
    while rest and len(msgs) < 64:
        raw, rest = take(rest)
        text, rest = take(rest)
        content = text.decode("utf-8", "strict")
        if raw.decode("latin-1") in ROLES:
            role = ROLES[raw.decode("latin-1")]
        elif len(raw) <= 1:  # the harness's rule: one byte b (or none, b = 0) is role b % 3
            role = ("system", "user", "assistant")[(raw[0] if raw else 0) % 3]
        else:
            role = raw.decode("utf-8", "strict")
        if role not in ("system", "user", "assistant"):
            return None
        msgs.append({"role": role, "content": content})
    if not msgs:  # templates index messages[0]: jinja2 raises on an empty chat, C renders it
        return None
    bos, eos = ("<s>", "</s>") if opts & 2 else ("<|begin_of_text|>", "<|eot_id|>")
    return data[0] & 7, bool(opts & 1), bos, eos, msgs


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    try:
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as e:
        print(f"skip: chat_jinja: {e} (scripts/install-deps.sh installs jinja2)")
        return 77
    fuzzer, directory = sys.argv[1], sys.argv[2]

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    checked = failures = 0
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        try:
            case = parse(open(path, "rb").read())
        except UnicodeDecodeError:
            case = None
        if case is None:
            continue
        _, gen, bos, eos, msgs = case
        out = subprocess.run([fuzzer, path], env=dict(os.environ, FUZZ_CHAT_PRINT="1"),
                             capture_output=True, check=False)
        lines = [ln for ln in out.stdout.decode().splitlines()
                 if ln.startswith(("template ", "render ", "refused"))]
        if out.returncode != 0 or len(lines) != 2:
            print(f"FAILED {name}: the harness exited {out.returncode}\n{out.stderr.decode()[-2000:]}")
            failures += 1
            continue
        template = bytes.fromhex(lines[0].split(" ", 1)[1]).decode("utf-8")
        try:
            want = env.from_string(template).render(messages=msgs, add_generation_prompt=gen,
                                                    bos_token=bos, eos_token=eos)
        except TemplateError:
            want = None
        got = (bytes.fromhex(lines[1].split(" ", 1)[1]).decode("utf-8", "replace")
               if lines[1].startswith("render") else None)
        checked += 1
        if got != want:
            failures += 1
            print(f"MISMATCH {name}:\n  jinja2:  {want!r}\n  specdec: {got!r}")
    if failures:
        print(f"chat_jinja: {failures} of {checked} renderings differ from jinja2")
        return 1
    print(f"chat_jinja: {checked} corpus chats render exactly as jinja2 renders their template")
    return 0


if __name__ == "__main__":
    sys.exit(main())
