#!/usr/bin/env bash
# The tests of count_lines.sh: bash test_count.sh
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

mkdir "$work/plain" "$work/spaces" "$work/empty"
printf 'a\nb\n' >"$work/plain/one.txt"
printf 'c\n' >"$work/plain/two.txt"
printf 'x\ny\nz\n' >"$work/spaces/my notes.txt"
printf 'ignored\n' >"$work/spaces/readme.md"

check "plain names" "$(printf '2 one.txt\n1 two.txt\n3 total')" "$(bash "$here/count_lines.sh" "$work/plain" 2>&1)"
check "a name with a space" "$(printf '3 my notes.txt\n3 total')" "$(bash "$here/count_lines.sh" "$work/spaces" 2>&1)"
check "no .txt files" "0 total" "$(bash "$here/count_lines.sh" "$work/empty" 2>&1)"

if [ "$failures" -ne 0 ]; then
    echo "FAILED ($failures)"
    exit 1
fi
echo "all passed"
