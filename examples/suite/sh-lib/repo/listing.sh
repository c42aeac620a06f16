#!/usr/bin/env bash
# Usage: listing.sh DIR
# Prints the names of the regular files in DIR, sorted.
set -eu

die() {
    echo "error: $*" >&2
    exit 2
}

require_dir() {
    [ -d "$1" ] || die "$1 is not a directory"
}

[ $# -eq 1 ] || die "usage: listing.sh DIR"
require_dir "$1"
find "$1" -maxdepth 1 -type f -printf '%f\n' | LC_ALL=C sort
