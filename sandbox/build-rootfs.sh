#!/bin/sh
# Builds the Debian root filesystem of agent-runner's default sandbox image.
#
#   build-rootfs.sh <empty-target-dir>
#
# Offline from any container registry: only a Debian mirror is needed
# (AGENT_RUNNER_DEBIAN_MIRROR, default http://deb.debian.org/debian).
# Optional: AGENT_RUNNER_DEBOOTSTRAP_CACHE=<dir> keeps downloaded .debs between builds.
# Needs root (debootstrap creates device nodes and chroots).
# The runner embeds this file; its sha256 is part of the image tag.
set -eu

target="${1:?usage: build-rootfs.sh <target-dir>}"
mirror="${AGENT_RUNNER_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm

# Tools that test suites commonly expect. Keep it cheap: no Recommends are installed.
packages="python3,python3-pytest,python3-pip,python3-venv,git,make,gcc,g++,libc6-dev,\
procps,ca-certificates,curl,patch,xz-utils,bzip2,unzip,file"

if [ "$(id -u)" != 0 ]; then
    echo "error: building the sandbox image needs root (debootstrap creates device nodes and" >&2
    echo "uses chroot). Run agent-runner as root once to build it, or pass a prebuilt image." >&2
    exit 2
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "debootstrap is missing: installing it with apt-get (apt-get install -y debootstrap)"
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
    else
        echo "error: debootstrap is not installed. Install it (Debian/Ubuntu: apt-get install" >&2
        echo "debootstrap; Fedora: dnf install debootstrap) or pass a prebuilt image." >&2
        exit 2
    fi
fi

cache_opt=""
if [ -n "${AGENT_RUNNER_DEBOOTSTRAP_CACHE:-}" ]; then
    mkdir -p "$AGENT_RUNNER_DEBOOTSTRAP_CACHE"
    cache_opt="--cache-dir=$AGENT_RUNNER_DEBOOTSTRAP_CACHE"
fi

echo "debootstrap $suite from $mirror with: $packages"
# shellcheck disable=SC2086 # cache_opt is empty or one word
debootstrap --variant=minbase $cache_opt --include="$packages" "$suite" "$target" "$mirror"

echo "cleaning apt caches and logs"
rm -rf "$target"/var/cache/apt/archives/*.deb "$target"/var/cache/apt/*.bin \
    "$target"/var/lib/apt/lists/* "$target"/var/log/*.log "$target"/var/log/apt/* \
    "$target"/var/cache/debconf/*-old "$target"/var/lib/dpkg/*-old \
    "$target"/usr/share/doc/* "$target"/usr/share/man/* "$target"/usr/share/info/* \
    "$target"/tmp/* "$target"/root/.cache 2>/dev/null || true
# Message translations (~60 MB); keep locale.alias.
find "$target/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
# No host identity in the image.
: > "$target/etc/hostname"
rm -f "$target/etc/resolv.conf"
echo "rootfs ready: $(du -sh "$target" | cut -f1)"
