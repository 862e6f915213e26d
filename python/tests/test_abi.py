"""The ctypes mirror (specdec/_lib.py) matches the C compiler's layout of every public struct
it declares, and the stop-reason order."""

import ctypes
import json
import subprocess

from specdec import _lib

from conftest import helper


def test_struct_layouts_match_the_header() -> None:
    c = json.loads(subprocess.run([helper(), "abi"], check=True, capture_output=True,
                                  text=True).stdout)
    assert set(c["structs"]) == set(_lib.STRUCTS)
    for name, cls in _lib.STRUCTS.items():
        want = c["structs"][name]
        got = {f: [getattr(cls, f).offset, getattr(cls, f).size] for f, _ in cls._fields_}
        assert got == want["fields"], f"{name}: [offset, size] {got} != C {want['fields']}"
        assert ctypes.sizeof(cls) == want["size"], \
            f"{name}: size {ctypes.sizeof(cls)} != C {want['size']}: a field was added in " \
            "specdec.h; mirror it in python/specdec/_lib.py"
    assert c["stop_reasons"] == list(range(len(_lib.STOP_REASONS)))
    assert c["stop_count"] == len(_lib.STOP_REASONS), "a stop reason was added in specdec.h"


def test_status_codes_come_from_the_library() -> None:
    assert _lib.STATUS["SD_OK"] == 0
    assert "SD_ERR_VOCAB_MISMATCH" in _lib.STATUS and "SD_ERR_BUSY" in _lib.STATUS
