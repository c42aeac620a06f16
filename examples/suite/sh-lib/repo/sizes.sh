#!/usr/bin/env bash
# Usage: sizes.sh DIR
# Prints the total size in bytes of the regular files in DIR.
set -eu

die() {
    echo "error: $*" >&2
    exit 2
}

require_dir() {
    [ -d "$1" ] || die "$1 is not a directory"
}

[ $# -eq 1 ] || die "usage: sizes.sh DIR"
require_dir "$1"
total=0
while IFS= read -r -d '' size; do
    total=$((total + size))
done < <(find "$1" -maxdepth 1 -type f -printf '%s\0')
echo "$total"
