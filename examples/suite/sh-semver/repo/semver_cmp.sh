#!/usr/bin/env bash
# Usage: semver_cmp.sh A B
# Prints -1, 0 or 1 when version A is lower than, equal to or higher than version B.
set -eu

IFS=. read -r a1 a2 a3 <<<"$1"
IFS=. read -r b1 b2 b3 <<<"$2"

for pair in "$a1 $b1" "$a2 $b2" "$a3 $b3"; do
    read -r x y <<<"$pair"
    if [[ "$x" < "$y" ]]; then
        echo -1
        exit 0
    fi
    if [[ "$x" > "$y" ]]; then
        echo 1
        exit 0
    fi
done
echo 0
