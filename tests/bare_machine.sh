#!/usr/bin/env bash
# Runs a command (default: the README's test command) as on a bare machine: one with only the
# packages of a fresh Node.js image, without the programs that .ci/run installs (ping, arping,
# ndisc6, keepalived, dnsmasq, chromium, tmux, stress-ng, etcd, tcpdump). Nothing is uninstalled:
# in a private mount namespace, /usr/bin and /usr/sbin (and /bin, /sbin when they are not links
# to them) are covered by copies (hard links) without those packages' programs. The namespace and
# the copies end with the command; the machine's own directories are never changed.
#
#   bash tests/bare_machine.sh                       # deno task test, as on a bare machine
#   bash tests/bare_machine.sh --hide iproute2 --hide util-linux   # also without ip, setpriv…
#   bash tests/bare_machine.sh --keep tmux -- deno test -A tests/failmon_tui_test.ts
#
# Options: --hide PKG (also hide this package's programs), --keep PKG (do not hide it),
# --list (print the programs that would be hidden, and exit). Needs root (a mount namespace),
# dpkg, and util-linux's unshare and mount. `deno task test:bare` runs the default.
set -euo pipefail

# The packages .ci/run installs that a fresh Node.js image (Debian 12) does not have.
hide=(iputils-ping iputils-arping ndisc6 keepalived dnsmasq-base chromium tmux stress-ng
  etcd-server etcd-client tcpdump)
list=0
while [ $# -gt 0 ]; do
  case "$1" in
    --hide) hide+=("$2"); shift 2 ;;
    --keep)
      kept=()
      for p in "${hide[@]}"; do [ "$p" = "$2" ] || kept+=("$p"); done
      hide=("${kept[@]}"); shift 2 ;;
    --list) list=1; shift ;;
    --) shift; break ;;
    -*) echo "bare_machine: unknown option $1 (allowed: --hide PKG, --keep PKG, --list, --)" >&2
      exit 2 ;;
    *) break ;;
  esac
done
# The README's test command (deno itself, when it is on PATH, is the same Deno 2.9.6).
if [ $# -eq 0 ]; then
  if command -v deno >/dev/null 2>&1; then set -- deno task test; else set -- npx -y deno@2.9.6 task test; fi
fi

# The programs to hide: every file of those packages in a bin or sbin directory. With a merged
# /usr, dpkg may list /bin/ping for /usr/bin/ping: keep the name only, hide it in every directory.
programs=()
for p in "${hide[@]}"; do
  if ! files=$(dpkg -L "$p" 2>/dev/null); then
    echo "bare_machine: $p is not installed here; nothing to hide for it" >&2
    continue
  fi
  while IFS= read -r f; do
    case "$f" in */bin/*|*/sbin/*) programs+=("$(basename "$f")") ;; esac
  done <<<"$files"
done
if [ "$list" = 1 ]; then
  printf '%s\n' "${hide[@]/#/package: }" "${programs[@]}"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "bare_machine: needs root (it covers /usr/bin in a private mount namespace)" >&2
  exit 2
fi

if [ "${BARE_MACHINE_INSIDE:-}" != 1 ]; then
  work=$(mktemp -d /tmp/bare-machine.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  # Copies of the program directories (hard links when on the same file system: no space used).
  dirs=()
  for d in /usr/bin /usr/sbin /bin /sbin; do
    [ -d "$d" ] && [ ! -L "$d" ] || continue
    copy="$work/$(echo "${d#/}" | tr / _)"
    cp -al "$d" "$copy" 2>/dev/null || { rm -rf "$copy"; cp -a "$d" "$copy"; }
    for prog in "${programs[@]}"; do rm -f "$copy/$prog"; done
    dirs+=("$d=$copy")
  done
  # Run a new copy of this script in the namespace: it mounts, then runs the command.
  BARE_MACHINE_INSIDE=1 BARE_MACHINE_DIRS="${dirs[*]}" BARE_MACHINE_HIDDEN="${hide[*]}" \
    BARE_MACHINE_PROGRAMS="${programs[*]}" \
    unshare -m --propagation private -- bash "$0" "$@" && status=0 || status=$?
  exit "$status"
fi

for pair in $BARE_MACHINE_DIRS; do
  mount --bind "${pair#*=}" "${pair%%=*}"
done
# Check that the cover works before running anything: every hidden program must be gone.
for prog in $BARE_MACHINE_PROGRAMS; do
  for d in /usr/bin /usr/sbin /bin /sbin; do
    if [ -e "$d/$prog" ]; then
      echo "bare_machine: $d/$prog is still there; not a bare machine" >&2
      exit 2
    fi
  done
done
echo "bare_machine: hidden packages: $BARE_MACHINE_HIDDEN" >&2
cd "$(dirname "$0")/.."
exec "$@"
