#!/usr/bin/env bash
# libspecdec.so exports exactly the functions specdec.h declares: every one defined, nothing
# else visible. The declarations are read from the preprocessed header (the build's version
# script reads the raw one). Usage: check_exports.sh LIBSPECDEC_SO SPECDEC_H
set -u
lib=$1 header=$2
# a name followed by its parameter list: not a function pointer "(*name)(...)", nor a
# return type before one "type (*member)(...)"
declared=$(cc -E -P -x c "$header" | grep -oP '(?<![(a-z0-9_])sd_[a-z0-9_]+(?= *\((?! *\*))' |
  sort -u)
exported=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRW]$/ {print $3}' | sort -u)
missing=$(comm -23 <(echo "$declared") <(echo "$exported"))
extra=$(comm -13 <(echo "$declared") <(echo "$exported"))
[ -n "$missing" ] && echo "FAIL: declared in specdec.h but not exported: $missing"
[ -n "$extra" ] && echo "FAIL: exported but not in specdec.h: $extra"
[ -z "$missing" ] && [ -z "$extra" ] || exit 1
echo "libspecdec.so exports the $(echo "$declared" | wc -l) functions of specdec.h and nothing else"
