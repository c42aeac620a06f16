#!/usr/bin/env bash
# A key-value store in a text file, one `key=value` per line.
# Usage: kv.sh FILE get KEY | kv.sh FILE set KEY VALUE
set -eu

file=$1
command=$2
touch "$file"

case "$command" in
get)
    key=$3
    awk -F= -v k="$key" '$1 == k { print substr($0, length(k) + 2); found = 1 } END { exit !found }' "$file"
    ;;
set)
    key=$3 value=$4
    awk -F= -v k="$key" '$1 != k' "$file" >"$file.new"
    printf '%s=%s\n' "$key" "$value" >>"$file.new"
    mv "$file.new" "$file"
    ;;
*)
    echo "kv.sh: unknown command $command" >&2
    exit 2
    ;;
esac
