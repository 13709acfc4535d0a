#!/bin/sh
# embed.sh SYMBOL FILE - prints C source defining FILE's bytes as
#   const char SYMBOL[] (NUL-terminated) and const size_t SYMBOL_len,
# so the server carries openapi.yaml and answers GET /openapi.yaml from any
# working directory. Only POSIX od and awk: no xxd needed.
set -eu
sym=$1
file=$2
[ -r "$file" ] || { echo "embed.sh: cannot read $file" >&2; exit 1; }
printf '/* Generated from %s by scripts/embed.sh; do not edit. */\n' "$file"
printf '#include <stddef.h>\n'
printf 'const char %s[] = {\n' "$sym"
od -An -v -tx1 "$file" | awk '{ line = ""; for (i = 1; i <= NF; i++) line = line "0x" $i ","; if (line != "") print line }'
printf '0x00};\n'
printf 'const size_t %s_len = sizeof %s - 1;\n' "$sym" "$sym"
