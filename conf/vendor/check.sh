#!/usr/bin/env bash
# conf/vendor/pingora-core must be the released pingora-core 0.9.1 with
# conf/patches/*.patch applied in order, and nothing else: this takes the
# release with cargo (its registry cache when the crate is there, else a
# download), applies the patches to a copy, and compares the trees.
# `bash conf/vendor/check.sh` from anywhere; tests/run.sh runs it.
# Exit 0 with one line "OK ..." when equal; else the difference and exit 1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

crate=pingora-core
version=0.9.1
# sha256 of pingora-core-0.9.1.crate as published (Cargo.lock's checksum).
sha256=a535f47f65fdcb003f9e1df04cd18e614c128dfe9388acce3f211ae38ac14d68
vendored=conf/vendor/pingora-core
# In the released crate, not in the vendored copy (and not compared):
# cargo's packaging metadata (.cargo_vcs_info.json, Cargo.toml.orig, the
# crate's own Cargo.lock, which cargo ignores for a dependency) and the
# examples and benches, which no build of edgepop compiles (cargo does not
# need their files for a path dependency outside the workspace). The
# vendored Cargo.toml is the released one, targets included.
exclude=(.cargo_vcs_info.json Cargo.toml.orig Cargo.lock examples benches)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The release, through cargo: a throwaway package that depends on exactly
# it. The repository's lock comes along so that the other dependencies
# resolve to versions already in the cache; `cargo fetch` verifies the
# .crate against the registry's checksum, and the pinned sha256 below
# against the one this check was written for.
mkdir -p "$tmp/fetch/src"
: >"$tmp/fetch/src/lib.rs"
cat >"$tmp/fetch/Cargo.toml" <<EOF
[package]
name = "edgepop-vendor-check"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
$crate = { version = "=$version", default-features = false }
EOF
cp Cargo.lock "$tmp/fetch/Cargo.lock"
host=$(rustc -vV | sed -n 's/^host: //p')
(cd "$tmp/fetch" && cargo fetch --quiet --target "$host")

archive=
for f in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$crate-$version.crate"; do
  [[ -f $f ]] || continue
  if [[ $(sha256sum "$f" | cut -d' ' -f1) == "$sha256" ]]; then
    archive=$f
    break
  fi
done
if [[ -z $archive ]]; then
  echo "vendor check: no $crate-$version.crate with sha256 $sha256 in cargo's registry cache" >&2
  exit 1
fi

mkdir "$tmp/release"
tar -xzf "$archive" -C "$tmp/release"
expected="$tmp/release/$crate-$version"
for x in "${exclude[@]}"; do
  rm -rf "${expected:?}/$x"
done

# GNU patch, exactly (no fuzz, no backups); git apply where patch is absent.
apply() {
  if command -v patch >/dev/null; then
    patch -d "$expected" -p1 --batch --forward --fuzz=0 --no-backup-if-mismatch --quiet <"$1"
  else
    git -C "$expected" apply -p1 "$PWD/$1"
  fi
}
for p in conf/patches/*.patch; do
  if ! apply "$p"; then
    echo "vendor check: $p does not apply to $crate $version (after the patches before it)" >&2
    exit 1
  fi
done

if ! diff -ru "$expected" "$vendored" >"$tmp/diff"; then
  sed "s#$expected#$crate-$version+patches#g" "$tmp/diff"
  echo "vendor check: $vendored differs from $crate $version + conf/patches/*.patch (above)" >&2
  exit 1
fi
echo "OK: $vendored = $crate $version + $(ls conf/patches/*.patch | wc -l) patches (conf/patches/*.patch)"
