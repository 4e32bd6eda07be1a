#!/usr/bin/env bash
# The README's test command must pass wherever the checkout lives. Tests that start a process as an
# unprivileged user (nobody) once failed from a clone in a private directory (mode 0700, e.g. under
# /root), which that user cannot traverse. This clones HEAD into such a directory and runs those tests
# there, inside a fresh network namespace as the README says. Without root or without the user
# nobody, the tests skip themselves (one warning line each) and this passes.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
private="$(mktemp -d)"
trap 'rm -rf "$private"' EXIT
chmod 0700 "$private"
git clone --quiet --no-hardlinks "$repo" "$private/groupcast"
git -C "$private/groupcast" checkout --quiet --detach "$(git -C "$repo" rev-parse HEAD)"
cd "$private/groupcast"
npm ci
unshare -n sh -c 'ip link set lo up && npx vitest run test/security/access.test.ts test/durability/permission.test.ts'
