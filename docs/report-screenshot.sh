#!/usr/bin/env bash
# Regenerates docs/report-telescope.png, the README's picture of `poolparty report`: runs
# examples/telescope in a temporary copy, writes its report and screenshots it with headless
# Chromium (Debian's `chromium`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r examples/telescope "$tmp/telescope"
target/debug/poolparty run -q "$tmp/telescope"
target/debug/poolparty report "$tmp/telescope" -o "$tmp/report.html"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$tmp/profile" \
    --window-size=1100,1900 --screenshot="$PWD/docs/report-telescope.png" "file://$tmp/report.html"
