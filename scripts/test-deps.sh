#!/usr/bin/env bash
# Install what the tests need on a fresh Debian machine: real clients and servers, not stand-ins.
# Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v ffprobe >/dev/null || need+=(ffmpeg)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v chromium >/dev/null || need+=(chromium)
command -v wrk >/dev/null || need+=(wrk)
# HAProxy 2.6 in front of the origins in the failover test (tests/fixtures_haproxy.py, deploy/haproxy.cfg).
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v node >/dev/null || need+=(nodejs npm)
# PostgreSQL 15 for the shared catalog and the job queue (tests/fixtures_pg.py starts a throwaway cluster)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# GStreamer as a native HLS/DASH client (tests/test_players_gstreamer.py): the command-line tools, and
# the plugins it needs (souphttpsrc, qtdemux: good; hlsdemux/dashdemux and adaptivedemux2: bad;
# avdec_aac: libav; opusdec: base, a dependency of the others).
command -v gst-launch-1.0 >/dev/null || need+=(gstreamer1.0-tools)
for pkg in gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "test-deps: missing ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
  echo "test-deps: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ -f tests/players/package.json ]; then
  if [ ! -d tests/players/node_modules ] || [ tests/players/package-lock.json -nt tests/players/node_modules ]; then
    (cd tests/players && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
