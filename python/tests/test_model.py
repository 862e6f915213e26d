"""Models, tokens, text and chat templates through the package; errors name the value."""

from pathlib import Path

import pytest

import specdec


def test_info_and_tokens(target: specdec.Model) -> None:
    info = target.info
    assert (info.arch, info.n_vocab, info.n_layer, info.device) == ("llama", 320, 2, "cpu")
    ids = target.tokenize("the quick brown fox")
    assert ids and all(0 <= t < 320 for t in ids)
    assert target.detokenize(ids) == "the quick brown fox"
    assert target.detokenize_bytes(ids) == b"the quick brown fox"


def test_special_markup_is_text_unless_asked(target: specdec.Model) -> None:
    plain = target.tokenize("<|im_start|>")
    special = target.tokenize("<|im_start|>", parse_special=True)
    assert len(special) == 1 and len(plain) > 1
    assert target.detokenize(plain) == target.detokenize(special) == "<|im_start|>"


def test_chat_template(target: specdec.Model) -> None:
    text = target.chat([("user", "hi"), {"role": "assistant", "content": "hello"}])
    assert "<|im_start|>user\nhi<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert not target.chat([("user", "hi")], add_generation_prompt=False).endswith("assistant\n")


def test_real_tokenizer_round_trip(smol: specdec.Model) -> None:
    text = "Speculative decoding: naïve café — 東京 🙂"
    assert smol.detokenize(smol.tokenize(text, add_bos=False)) == text


def test_errors_name_the_value(tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    with pytest.raises(specdec.SpecdecError) as e:
        specdec.Model(missing)
    assert e.value.status == "SD_ERR_IO" and "missing.gguf" in str(e.value)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 60)
    with pytest.raises(specdec.SpecdecError) as e:
        specdec.Model(bad)
    assert e.value.status == "SD_ERR_BAD_MODEL"
