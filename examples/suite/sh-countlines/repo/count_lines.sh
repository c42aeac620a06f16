#!/usr/bin/env bash
# Usage: count_lines.sh DIR
# Prints the number of lines of every .txt file in DIR as `<lines> <name>`, sorted by name, then
# the sum as `<sum> total`.
set -eu

dir=$1
total=0
for path in $(ls "$dir"/*.txt); do
    lines=$(wc -l <$path)
    echo "$lines $(basename $path)"
    total=$((total + lines))
done
echo "$total total"
