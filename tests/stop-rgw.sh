#!/usr/bin/env bash
# stop-rgw.sh DIR: stop what start-rgw.sh DIR started (radosgw, ceph-osd, ceph-mon).
set -uo pipefail
dir=$(realpath -m "$1")
for name in client.rgw osd.0 mon.a; do
  pidfile=$dir/run/$name.pid
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || continue
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
done
exit 0
