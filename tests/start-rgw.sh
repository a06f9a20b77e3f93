#!/usr/bin/env bash
# start-rgw.sh DIR PORT: a throw-away single-host Ceph cluster serving S3 on 127.0.0.1:PORT.
#
# One ceph-mon and one ceph-osd on memstore (the objects live in the OSD's memory, so a
# stopped cluster is gone), no cephx, and radosgw with the beast frontend. Everything
# lives under DIR (config, mon store, logs, sockets, pid files); nothing is written
# elsewhere. Prints the S3 user's keys when ready. Stop it with `stop-rgw.sh DIR`, or
# kill the pids in DIR/*.pid. The mon's port is PORT+1 (v2 messenger only).
#
# Needs Debian's packages: radosgw ceph-mon ceph-osd (`make s3-deps`).
set -euo pipefail

dir=$(realpath -m "$1")
port=$2
mon_port=$((port + 1))
access_key=${RGW_ACCESS_KEY:-studio-test-access}
secret_key=${RGW_SECRET_KEY:-studio-test-secret-key-0123456789}

mkdir -p "$dir"/{mon,osd,run,log}
fsid=$(cat /proc/sys/kernel/random/uuid)
conf=$dir/ceph.conf

cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon_port]
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
ms bind ipv6 = false
ms bind msgr1 = false
# With auth none there is no session key, so only crc mode is possible (daemons other
# than the CLI default to secure mode on mon connections and then fail with EACCES).
ms mon client mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
ms client mode = crc
ms cluster mode = crc
ms service mode = crc
run dir = $dir/run
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
pid file = $dir/run/\$name.pid
keyring = $dir/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 1
osd pool default pgp num = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
# Commit monitor changes at once (default: batched for a second): pool creation is
# most of the start-up.
paxos propose interval = 0.01
paxos min wait = 0.001
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
osd objectstore = memstore
memstore device bytes = 2147483648
osd data = $dir/osd
osd max object name len = 460
osd max object namespace len = 64
rgw frontends = beast endpoint=127.0.0.1:$port
rgw dns name = localhost
rgw data = $dir/rgw
rgw enable usage log = false
rgw crypt require ssl = false
debug ms = 0

[mon.a]
mon data = $dir/mon
EOF

# An empty keyring: with auth none nothing checks it, but the tools want the file.
: >"$dir/keyring"

monmaptool --create --clobber --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" -i a --mkfs --monmap "$dir/monmap" >"$dir/log/mkfs-mon.out" 2>&1
ceph-mon -c "$conf" -i a 2>>"$dir/log/daemons.err"

osd_uuid=$(cat /proc/sys/kernel/random/uuid)
osd_id=$(ceph -c "$conf" --connect-timeout 30 osd new "$osd_uuid")
ceph-osd -c "$conf" -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" >"$dir/log/mkfs-osd.out" 2>&1
ceph-osd -c "$conf" -i "$osd_id" 2>>"$dir/log/daemons.err"

radosgw -c "$conf" -n client.rgw 2>>"$dir/log/daemons.err"
for _ in $(seq 600); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.1
done

radosgw-admin -c "$conf" user create --uid studio --display-name studio \
  --access-key "$access_key" --secret "$secret_key" >/dev/null
# A second user with no rights of its own: what a bucket policy grants agents (docs/deploy.md).
radosgw-admin -c "$conf" user create --uid agent --display-name agent \
  --access-key "$access_key-agent" --secret "$secret_key-agent" >/dev/null
echo "access_key=$access_key"
echo "secret_key=$secret_key"
echo "agent_access_key=$access_key-agent"
echo "agent_secret_key=$secret_key-agent"
