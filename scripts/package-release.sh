#!/usr/bin/env bash
# Packages agent-runner for a release:
#   OUT/agent-runner-<version>-<target>.tar.gz          the binary, README.md and the example
#                                                        dispatch workflow, under one directory
#   OUT/agent-runner-<version>-<target>.tar.gz.sha256   its checksum, `sha256sum` format
# <version> is Cargo.toml's, <target> the host triple of `rustc -vV`. Prints the archive's
# path on stdout; everything else goes to stderr.
#
# Usage: scripts/package-release.sh [--binary PATH] [--out DIR]
#   --binary PATH  package this binary (default: `cargo build --release --locked` and
#                  target/release/agent-runner); it must report Cargo.toml's version
#   --out DIR      where to write the archive and its checksum (default: target/dist)
#
# The archive is reproducible for the same inputs: sorted entries, owner 0:0, fixed modes,
# every mtime set to SOURCE_DATE_EPOCH (default: the last commit's time), gzip without a
# timestamp.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
binary=
out=$root/target/dist

die() {
  echo "package-release: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --binary)
      [ $# -ge 2 ] || die "--binary needs a path"
      binary=$2
      shift 2
      ;;
    --out)
      [ $# -ge 2 ] || die "--out needs a directory"
      out=$2
      shift 2
      ;;
    -h | --help)
      sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument: $1 (usage: $0 [--binary PATH] [--out DIR])" ;;
  esac
done

# The [package] table's version, not a dependency's.
version=$(awk '
  /^\[/ { in_package = ($0 == "[package]") }
  in_package && /^version[[:space:]]*=/ { gsub(/^version[[:space:]]*=[[:space:]]*"|".*$/, ""); print; exit }
' "$root/Cargo.toml")
[ -n "$version" ] || die "no version in the [package] table of $root/Cargo.toml"

target=$(rustc -vV | sed -n 's/^host: //p')
[ -n "$target" ] || die "\`rustc -vV\` printed no host triple"

if [ -z "$binary" ]; then
  echo "package-release: cargo build --release --locked" >&2
  (cd "$root" && cargo build --release --locked >&2)
  target_dir=${CARGO_TARGET_DIR:-target}
  case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac # cargo ran in $root
  binary="$target_dir/release/agent-runner"
fi
{ [ -f "$binary" ] && [ -x "$binary" ]; } || die "$binary is not an executable file"

# A stale binary must not be published under a new version.
reported=$("$binary" --version | head -n 1) || die "$binary --version failed"
[ "$reported" = "agent-runner $version" ] ||
  die "$binary reports \`$reported\`, Cargo.toml says $version: rebuild it"

name="agent-runner-$version-$target"
archive="$name.tar.gz"
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$name/examples/dispatch-workflow"
install -m 0755 "$binary" "$stage/$name/agent-runner"
install -m 0644 "$root/README.md" "$stage/$name/README.md"
install -m 0644 "$root/examples/dispatch-workflow/agent-runner.yml" \
  "$stage/$name/examples/dispatch-workflow/agent-runner.yml"

mkdir -p "$out"
tar --create --format=gnu --sort=name \
  --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
  --mode='u+rwX,go+rX,go-w' \
  --directory="$stage" "$name" |
  gzip --no-name >"$stage/$archive"
mv "$stage/$archive" "$out/$archive"
# The bare file name, so `sha256sum --check` works in the directory the two are downloaded to.
(cd "$out" && sha256sum "$archive" >"$archive.sha256")

echo "package-release: $(cat "$out/$archive.sha256")" >&2
echo "$(cd "$out" && pwd)/$archive"
