#!/bin/sh
# Debian packages the tests need. As root: install the missing ones. Otherwise: print
# the one apt-get line to run and fail, so nobody mistakes a missing broker for a pass.
set -eu
missing=""
for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing
else
    echo "The tests need Debian packages that are not installed. Run:" >&2
    echo "    sudo apt-get install -y$missing" >&2
    exit 1
fi
