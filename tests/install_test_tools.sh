#!/usr/bin/env bash
# Summary: install the system tools the test suite needs (rclone, sshd) when missing
#
# Usage: tests/install_test_tools.sh      (make test runs it through make tools)
#
# The offsite tests talk to real servers: an OpenSSH sshd on 127.0.0.1 reached
# through rclone. On a fresh Debian machine, as root, this installs the
# packages rclone and openssh-server with apt-get. It does nothing when the
# tools are there. Anything else (not root, no apt-get, apt-get failing) is a
# loud failure, so the offsite tests can never be skipped silently; set
# SQLITE_OPS_ALLOW_SKIP_OFFSITE=1 to accept running without them (those
# tests then skip, saying why).
set -euo pipefail

missing=()
command -v rclone >/dev/null 2>&1 || missing+=(rclone)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
[[ -x /usr/sbin/sshd ]] || command -v sshd >/dev/null 2>&1 || missing+=(openssh-server)
[[ ${#missing[@]} -gt 0 ]] || exit 0

fail() {
  if [[ ${SQLITE_OPS_ALLOW_SKIP_OFFSITE:-} == 1 ]]; then
    printf 'install_test_tools.sh: warning: %s; the offsite tests will skip (SQLITE_OPS_ALLOW_SKIP_OFFSITE=1)\n' "$1" >&2
    exit 0
  fi
  printf 'install_test_tools.sh: %s; install %s (apt-get install %s) or set SQLITE_OPS_ALLOW_SKIP_OFFSITE=1 to let the offsite tests skip\n' \
    "$1" "${missing[*]}" "${missing[*]}" >&2
  exit 1
}

[[ $(id -u) == 0 ]] || fail "missing ${missing[*]} and not root, so cannot install them"
command -v apt-get >/dev/null 2>&1 || fail "missing ${missing[*]} and no apt-get to install them"
echo "install_test_tools.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || fail "apt-get update failed"
apt-get install -y -qq --no-install-recommends rclone openssh-server openssh-client >/dev/null ||
  fail "apt-get install failed"
command -v rclone >/dev/null 2>&1 || fail "rclone is still missing after apt-get install"
