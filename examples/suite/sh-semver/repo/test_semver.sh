#!/usr/bin/env bash
# The tests of semver_cmp.sh: bash test_semver.sh
here=$(cd "$(dirname "$0")" && pwd)
failures=0

check() { # what, wanted, got
    if [ "$2" != "$3" ]; then
        echo "FAIL $1: got '$3', want '$2'"
        failures=$((failures + 1))
    fi
}

cmp() { bash "$here/semver_cmp.sh" "$@" 2>&1; }

check "1.2.3 vs 1.2.3" 0 "$(cmp 1.2.3 1.2.3)"
check "1.2.3 vs 1.3.0" -1 "$(cmp 1.2.3 1.3.0)"
check "1.10.0 vs 1.9.0" 1 "$(cmp 1.10.0 1.9.0)"
check "1.9.0 vs 1.10.0" -1 "$(cmp 1.9.0 1.10.0)"

if [ "$failures" -ne 0 ]; then
    echo "FAILED ($failures)"
    exit 1
fi
echo "all passed"
