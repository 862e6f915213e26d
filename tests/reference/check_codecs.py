#!/usr/bin/env python3
"""The C dequantizers against gguf-py's (gguf.quants.dequantize), bit for bit.

`sd_ref_dump codec OUT` writes, per quantized type, a tensor quantized by the project's
quantizer and one of random bytes (f16 fields finite), each with the C dequantization
beside it as F32 ("<name>.deq"). This script dequantizes every quantized tensor with
gguf-py and requires the same float32 bits (NaN never occurs: the f16 fields are finite).
The random-byte tensors reach every bit pattern of the scale and high-bit fields, which
the quantizer's output may not. (The quantizers' accuracy is tests/test_kernels_quants.c's.)

Exit: 0 pass, 1 mismatch, 2 tool error.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import gguf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_logits import verdict  # noqa: E402

TYPES = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl", "q2_k", "q3_k", "q4_k", "q5_k",
         "q6_k", "iq4_xs"]


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dump", required=True, help="path of the sd_ref_dump tool")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sd_codec_") as tmp:
        path = os.path.join(tmp, "codec.gguf")
        p = subprocess.run([args.dump, "codec", path], capture_output=True, text=True)
        if p.returncode != 0:
            print(f"ERROR: sd_ref_dump codec exited {p.returncode}: {p.stderr.strip()}")
            return 2
        r = gguf.GGUFReader(path)
        tensors = {t.name: t for t in r.tensors}
        failures = []
        for ty in TYPES:
            for kind in ("quant", "raw"):
                name = f"{ty}.{kind}"
                t, c = tensors.get(name), tensors.get(name + ".deq")
                if t is None or c is None:
                    failures.append(f"{name}: missing from the file")
                    continue
                if t.tensor_type.name.lower() != ty:
                    failures.append(f"{name}: stored as {t.tensor_type.name}")
                    continue
                ref = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).ravel()
                got = np.asarray(c.data, dtype=np.float32).ravel()
                diff = np.flatnonzero(ref.view(np.uint32) != got.view(np.uint32))
                status = "ok" if diff.size == 0 else "FAIL"
                print(f"{name:<12} {ref.size:>6} values  {status}")
                if diff.size:
                    i = int(diff[0])
                    failures.append(f"{name}: {diff.size} values differ, first at {i}: "
                                    f"C {got[i]!r} vs gguf-py {ref[i]!r}")
    return verdict(failures)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
