#!/usr/bin/env bash
# The tests of listing.sh, sizes.sh and lib.sh: bash test_scripts.sh
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

check() { # what, wanted, got
    if [ "$2" != "$3" ]; then
        printf 'FAIL %s:\n--- got\n%s\n--- want\n%s\n' "$1" "$3" "$2"
        failures=$((failures + 1))
    fi
}

printf 'abc' >"$work/b"
printf 'hello' >"$work/a"
mkdir "$work/sub"

check "listing" "$(printf 'a\nb')" "$(bash "$here/listing.sh" "$work" 2>&1)"
check "sizes" 8 "$(bash "$here/sizes.sh" "$work" 2>&1)"
check "listing of a missing directory" "$(printf 'error: %s\nexit 2' "$work/nope is not a directory")" \
    "$(bash "$here/listing.sh" "$work/nope" 2>&1; echo "exit $?")"
check "sizes without arguments" "$(printf 'error: %s\nexit 2' "usage: sizes.sh DIR")" "$(bash "$here/sizes.sh" 2>&1; echo "exit $?")"
check "lib.sh has require_dir" "$(printf 'error: %s\nexit 2' "/nonexistent is not a directory")" \
    "$(bash -c '. "$1/lib.sh"; require_dir /nonexistent' _ "$here" 2>&1; echo "exit $?")"

if [ "$failures" -ne 0 ]; then
    echo "FAILED ($failures)"
    exit 1
fi
echo "all passed"
