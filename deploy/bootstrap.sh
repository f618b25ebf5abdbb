#!/usr/bin/env bash
# Idempotent set-up of everything Eunomia needs on a Debian 12 host.
# Quick when already done: every step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${EUNOMIA_VENV:-$ROOT/.venv}
log() { echo "bootstrap: $*" >&2; }

APT_PKGS=(python3-bpfcc python3-venv podman runc busybox-static conmon uidmap
          catatonit slirp4netns postgresql chromium chromium-driver prometheus iproute2
          nginx-light wrk gcc libc6-dev containerd)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# Kernel headers for bcc: matching ones if the distro has them, else the
# Debian cloud headers known to work (shared/ENVIRONMENT.md), else the newest.
KREL=$(uname -r)
NEED_HDR=0
[ -e "/lib/modules/$KREL/build/include" ] || [ -n "$(ls -d /usr/src/linux-headers-*-cloud-amd64 2>/dev/null)" ] || NEED_HDR=1

if [ ${#missing[@]} -gt 0 ] || [ $NEED_HDR = 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if [ $NEED_HDR = 1 ]; then
    KNOWN_GOOD=linux-headers-6.1.0-50-cloud-amd64
    if apt-cache show "linux-headers-$KREL" >/dev/null 2>&1; then missing+=("linux-headers-$KREL")
    elif apt-cache show "$KNOWN_GOOD" >/dev/null 2>&1; then missing+=("$KNOWN_GOOD")
    else
      hdr=$(apt-cache pkgnames linux-headers- | grep -E '^linux-headers-[0-9.]+-[0-9]+-cloud-amd64$' | sort -V | tail -1 || true)
      [ -n "$hdr" ] && missing+=("$hdr") || log "no kernel headers package found"
    fi
  fi
  log "apt-get install ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # containerd is a test workload (tests start their own with temp paths): never a system service.
  if [[ " ${missing[*]} " == *" containerd "* ]]; then
    { systemctl disable --now containerd || systemctl disable containerd; } >/dev/null 2>&1 || true
  fi
  # nginx is only a workload for bench/overhead_bench.py: never a system service.
  if [[ " ${missing[*]} " == *" nginx-light "* ]]; then
    { systemctl disable --now nginx || systemctl disable nginx; } >/dev/null 2>&1 || true
    [ -s /run/nginx.pid ] && nginx -s quit 2>/dev/null || true
  fi
fi

if [ ! -e "/lib/modules/$KREL/build/include" ]; then
  build=$(ls -d /usr/src/linux-headers-*-cloud-amd64 2>/dev/null | sort -V | tail -1)
  common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -1)
  [ -n "$build" ] || { log "no kernel headers found under /usr/src"; exit 1; }
  log "linking kernel headers $build for $KREL"
  mkdir -p "/lib/modules/$KREL"
  ln -sfn "$build" "/lib/modules/$KREL/build"
  [ -n "$common" ] && ln -sfn "$common" "/lib/modules/$KREL/source"
fi

mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing || log "cannot mount tracefs"
mountpoint -q /sys/kernel/debug || mount -t debugfs nodev /sys/kernel/debug || log "cannot mount debugfs"

# The dashboard's graph library: a pinned release from the npm registry, checked against its
# published sha512 (npm pack verifies it too), unpacked into services/api/web/vendor/ (not in git).
CYTOSCAPE_VERSION=3.33.1
CYTOSCAPE_SHA512=iJc4TwyANnOGR1OmWhsS9ayRS3s+XQ185FmuHObThD+5AeJCakAAbWv8KimMTt08xCCLNgneQwFp+JRJOr9qGQ==
VENDOR=$ROOT/services/api/web/vendor
if [ "$(cat "$VENDOR/cytoscape.version" 2>/dev/null)" != "$CYTOSCAPE_VERSION" ]; then
  command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends npm >/dev/null; }
  log "fetching cytoscape $CYTOSCAPE_VERSION (npm registry)"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "cytoscape@$CYTOSCAPE_VERSION" >/dev/null) || {
    log "cannot fetch cytoscape@$CYTOSCAPE_VERSION from the npm registry (the dashboard's map needs it)"; rm -rf "$tmp"; exit 1; }
  got=$(openssl dgst -sha512 -binary "$tmp/cytoscape-$CYTOSCAPE_VERSION.tgz" | base64 -w0)
  [ "$got" = "$CYTOSCAPE_SHA512" ] || { log "cytoscape tarball sha512 mismatch: $got"; rm -rf "$tmp"; exit 1; }
  tar -xzf "$tmp/cytoscape-$CYTOSCAPE_VERSION.tgz" -C "$tmp" package/dist/cytoscape.min.js package/LICENSE
  mkdir -p "$VENDOR"
  mv "$tmp/package/dist/cytoscape.min.js" "$VENDOR/cytoscape.min.js"
  mv "$tmp/package/LICENSE" "$VENDOR/cytoscape.LICENSE"
  echo "$CYTOSCAPE_VERSION" > "$VENDOR/cytoscape.version"
  rm -rf "$tmp"
fi

# The venv uses the system Python, so Debian's bcc binding matches it.
PY=/usr/bin/python3
if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV"
  $PY -m venv "$VENV"
fi
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
[ -e "$SITE/bcc" ] || ln -sfn /usr/lib/python3/dist-packages/bcc "$SITE/bcc"

STAMP="$VENV/.deps-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -e "$STAMP" ]; then
  log "pip install"
  "$VENV/bin/pip" install -q -e ".[test]" 2>&1 | grep -v "is ignored: it is neither" >&2 || true
  "$VENV/bin/python" -c "import nats, orjson, aiohttp, yaml, asyncpg, zstandard, prometheus_client, bcc" 
  rm -f "$VENV"/.deps-*; touch "$STAMP"
fi
# CRI client stubs from services/enricher/cri_proto/runtime_v1.proto (only when it changed).
"$VENV/bin/python" -m services.enricher.cri_proto.gen
log "ready ($VENV)"
