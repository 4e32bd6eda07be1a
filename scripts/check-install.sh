#!/usr/bin/env bash
# A real install, the way an operator makes one: pack the three workspaces (prepack builds them), install
# the tarballs with `npm install -g` into a temporary prefix, then run test/install/installed.test.ts
# against <prefix>/bin/group-server and group-client, inside a fresh network namespace.
#
# Why a script and not part of `npm test`: a global install resolves the third-party dependencies'
# version ranges, which needs the registry's package metadata; `npm ci` (which works from the lock file)
# caches only the tarballs, so `npm install -g --offline` fails with ENOTCACHED inside `unshare -n`. The
# install step here may use the registry (--prefer-offline takes what the cache has); only the daemons'
# run is inside the namespace.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$repo"
mkdir "$work/packs"
npm pack --workspaces --pack-destination "$work/packs" --silent >/dev/null
npm install --global --prefix "$work/prefix" --prefer-offline --no-audit --no-fund --loglevel=error "$work"/packs/*.tgz
GC_INSTALL_PACKS="$work/packs" GC_INSTALL_PREFIX="$work/prefix" \
  unshare -n sh -c 'ip link set lo up && npx vitest run test/install/installed.test.ts'
