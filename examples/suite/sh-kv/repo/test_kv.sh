#!/usr/bin/env bash
# The tests of kv.sh: bash test_kv.sh
here=$(cd "$(dirname "$0")" && pwd)
store=$(mktemp)
trap 'rm -f "$store" "$store.new"' EXIT
failures=0

check() { # what, wanted, got
    if [ "$2" != "$3" ]; then
        echo "FAIL $1: got '$3', want '$2'"
        failures=$((failures + 1))
    fi
}

kv() { bash "$here/kv.sh" "$store" "$@" 2>&1; }

kv set colour blue
kv set size large
check "get colour" blue "$(kv get colour)"
check "get size" large "$(kv get size)"
check "delete colour" "" "$(kv delete colour)"
check "colour is gone" 1 "$(kv get colour >/dev/null; echo $?)"
check "size is kept" large "$(kv get size)"

if [ "$failures" -ne 0 ]; then
    echo "FAILED ($failures)"
    exit 1
fi
echo "all passed"
