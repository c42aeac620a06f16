#!/usr/bin/env bash
# Hidden tests of count_lines.sh.
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

mkdir "$work/odd" "$work/dir with space"
printf '1\n2\n' >"$work/odd/-n.txt"
printf '1\n' >"$work/odd/a  b.txt"
printf '1\n2\n3\n4\n' >"$work/odd/*.txt"
printf 'q\n' >"$work/dir with space/q.txt"

check "odd names" "$(printf '4 *.txt\n2 -n.txt\n1 a  b.txt\n7 total')" "$(cd "$work" && LC_ALL=C bash "$here/count_lines.sh" odd 2>&1)"
check "a directory with a space" "$(printf '1 q.txt\n1 total')" "$(bash "$here/count_lines.sh" "$work/dir with space" 2>&1)"
check "exit status" 0 "$(bash "$here/count_lines.sh" "$work/odd" >/dev/null 2>&1; echo $?)"

if [ "$failures" -ne 0 ]; then
    echo "FAILED ($failures)"
    exit 1
fi
echo "all passed"
