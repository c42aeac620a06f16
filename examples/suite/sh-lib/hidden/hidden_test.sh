#!/usr/bin/env bash
# Hidden tests of the lib.sh refactor.
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

printf '12' >"$work/x y"
check "listing from another directory" "x y" "$(cd / && bash "$here/listing.sh" "$work" 2>&1)"
check "sizes from another directory" 2 "$(cd "$work" && bash "$here/sizes.sh" . 2>&1)"
check "die in lib.sh" "$(printf 'error: %s\nexit 2' "boom")" "$(bash -c '. "$1/lib.sh"; die boom' _ "$here" 2>&1; echo "exit $?")"
for script in listing.sh sizes.sh; do
    check "$script has no copy of die" 0 "$(grep -c '^ *die *()' "$here/$script")"
    check "$script has no copy of require_dir" 0 "$(grep -c '^ *require_dir *()' "$here/$script")"
done

if [ "$failures" -ne 0 ]; then
    echo "FAILED ($failures)"
    exit 1
fi
echo "all passed"
