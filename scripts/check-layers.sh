#!/usr/bin/env bash
# Checks that folders are layers: a folder's sources include only from its own folder, from
# folders of a lower layer, or from include/ (the public API). Exit 1 listing every upward or
# sideways include. The order is docs/design-notes.md's "Layout" and CMakeLists.txt's link order.
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A layer=([core]=0 [kernels]=1 [comm]=1 [gguf]=2 [tokenizer]=3 [model]=4 [verify]=5
                  [draft]=6 [engine]=7 [apps]=8)
bad=0
while IFS= read -r file; do
  from=${file%%/*}
  [ -n "${layer[$from]+x}" ] || continue
  while IFS= read -r inc; do
    # resolve as the compiler does: next to the file first, then from the root
    if [ -e "$(dirname "$file")/$inc" ]; then
      target=$(realpath --relative-to=. "$(dirname "$file")/$inc")
    elif [ -e "$inc" ]; then target=$inc; else continue; fi
    to=${target%%/*}
    [ "$to" = "$from" ] || [ "$to" = include ] && continue
    if [ -z "${layer[$to]+x}" ] || [ "${layer[$to]}" -ge "${layer[$from]}" ]; then
      echo "$file includes $target (${to} is not below ${from})"
      bad=1
    fi
  done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$file")
done < <(git ls-files '*.c' '*.h' '*.cu' '*.cuh')
[ "$bad" -eq 0 ] && echo "layers: no folder includes from a folder above or beside it"
exit "$bad"
