#!/usr/bin/env bash
# The Debian package, from this repository: the production build, the
# manual pages made by the binary from its own command line, then cargo-deb
# (Cargo.toml [package.metadata.deb]). Prints the .deb's path.
#   bash conf/debian/build.sh                    # target/debian/edgepop_<v>_amd64.deb
#   PROFILE=release NO_BUILD=1 bash conf/debian/build.sh --deb-revision 2 --output DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=${PROFILE:-production}
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb@3.8.0
[ "${NO_BUILD:-0}" = 1 ] || cargo build --profile "$profile" --locked
rm -rf target/man && mkdir -p target/man
"target/$profile/edgepop" man target/man
cargo deb --no-build --strip --profile "$profile" "$@"
