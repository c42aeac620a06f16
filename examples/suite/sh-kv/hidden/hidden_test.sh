#!/usr/bin/env bash
# Hidden tests of kv.sh.
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

kv set a 1
kv set ab 2
kv set a.b 3
kv set b a=x
check "delete a" "" "$(kv delete a)"
check "a is gone" 1 "$(kv get a >/dev/null; echo $?)"
check "ab is kept" 2 "$(kv get ab)"
check "a.b is kept" 3 "$(kv get a.b)"
check "a value naming the key is kept" a=x "$(kv get b)"
check "deleting a missing key succeeds" 0 "$(kv delete nothing >/dev/null; echo $?)"
check "still there" 2 "$(kv get ab)"
check "unknown commands fail" 2 "$(kv frobnicate >/dev/null; echo $?)"

if [ "$failures" -ne 0 ]; then
    echo "FAILED ($failures)"
    exit 1
fi
echo "all passed"
