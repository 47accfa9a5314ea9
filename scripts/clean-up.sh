#!/usr/bin/env bash
# Removes everything a stopped `skiff server` (or `skiff agent`) left on
# this machine: the containers its containerd ran (their shims), mounts
# under its data dir, the pod bridge, the proxy's nftables table and
# routes, and the data dir itself. Stop the server first (Ctrl-C).
# Usage: scripts/clean-up.sh DATA_DIR   (e.g. /tmp/skiff)
set -uo pipefail
dir="${1:?usage: clean-up.sh DATA_DIR}"
dir="$(realpath -m "$dir")"
for containerd in "$dir/agent/containerd" "$dir/containerd"; do
  [ -d "$containerd" ] || continue
  # The containers' processes, by runc's state under the data dir, then
  # their shims and containerd.
  for state in "$containerd"/runc/k8s.io/*/state.json; do
    [ -f "$state" ] || continue
    runc --root "$containerd/runc/k8s.io" kill "$(basename "$(dirname "$state")")" KILL 2>/dev/null
  done
  # Shims and containerd by the pids they wrote, if those still name them.
  for pidfile in "$containerd"/state/io.containerd.runtime.v2.task/*/*/shim.pid "$containerd/containerd.pid"; do
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    case "$(cat "/proc/$pid/comm" 2>/dev/null)" in
      containerd*) kill -KILL "$pid" 2>/dev/null ;;
    esac
  done
done
grep -o " $dir[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
ip link delete skiff0 2>/dev/null
nft delete table ip skiff 2>/dev/null
for range in 10.42.0.0/16 10.43.0.0/16; do ip route delete unreachable "$range" 2>/dev/null; done
rm -rf "$dir"
echo "cleaned up $dir"
