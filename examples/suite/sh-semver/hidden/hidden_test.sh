#!/usr/bin/env bash
# Hidden tests of semver_cmp.sh.
here=$(cd "$(dirname "$0")" && pwd)
failures=0

check() { # what, wanted, got
    if [ "$2" != "$3" ]; then
        echo "FAIL $1: got '$3', want '$2'"
        failures=$((failures + 1))
    fi
}

cmp() { bash "$here/semver_cmp.sh" "$@" 2>&1; }

check "2.0.0 vs 10.0.0" -1 "$(cmp 2.0.0 10.0.0)"
check "1.0.10 vs 1.0.9" 1 "$(cmp 1.0.10 1.0.9)"
check "1.2 vs 1.2.0" 0 "$(cmp 1.2 1.2.0)"
check "1.2.0 vs 1.2" 0 "$(cmp 1.2.0 1.2)"
check "1 vs 1.0.1" -1 "$(cmp 1 1.0.1)"
check "3.0.0 vs 2.99.99" 1 "$(cmp 3.0.0 2.99.99)"

if [ "$failures" -ne 0 ]; then
    echo "FAILED ($failures)"
    exit 1
fi
echo "all passed"
