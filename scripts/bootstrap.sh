#!/usr/bin/env bash
# Installs what the project needs on a Debian 12 machine, once: Debian packages and the venv.
# Safe to run again: each step checks first and does nothing when already done.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${WARP_VENV:-$here/.venv}"
python=/usr/bin/python3.11

debian_packages=(
  kamailio kamailio-python3-modules kamailio-redis-modules kamailio-postgres-modules
  kamailio-extra-modules kamailio-utils-modules kamailio-cnxcc-modules
  rtpengine-daemon sip-tester redis-server postgresql-15 postgresql-client-15
  python3.11-venv docker-compose iproute2
)

missing=()
for p in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  # The packages' own services (system Redis, Postgres, Kamailio, rtpengine) must not start:
  # the project runs its own instances on its own ports. policy-rc.d is Debian's switch for it.
  placed_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${sudo_cmd[@]}" chmod 755 /usr/sbin/policy-rc.d
    placed_policy=1
  fi
  cleanup() { [ "$placed_policy" = 1 ] && "${sudo_cmd[@]}" rm -f /usr/sbin/policy-rc.d; true; }
  trap cleanup EXIT
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  cleanup
  trap - EXIT
fi

stamp="$venv/.warp-installed"
if [ ! -x "$venv/bin/python" ] || [ "$here/pyproject.toml" -nt "$stamp" ]; then
  echo "bootstrap: preparing venv $venv (Debian $python, the interpreter Kamailio embeds)"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -e "$here[dev]"
  touch "$stamp"
fi
