#!/usr/bin/env bash
# Removes everything a stopped `skiff server` (or `skiff agent`) left on
# this machine: the containers its containerd ran (their shims), the pods'
# network namespaces and forwarded node ports, mounts under its data dir,
# the pod bridge, the proxy's nftables tables and routes, and the data dir
# itself. Stop the server first (Ctrl-C).
# Usage: scripts/clean-up.sh DATA_DIR   (e.g. /tmp/skiff)
set -uo pipefail
dir="${1:?usage: clean-up.sh DATA_DIR}"
dir="$(realpath -m "$dir")"
for containerd in "$dir/agent/containerd" "$dir/containerd"; do
  [ -d "$containerd" ] || continue
  # Each shim names this containerd's socket on its command line (a shim
  # outlives its container's exit), and a pod sandbox's bundle names the
  # network namespace containerd made for it: both found before anything
  # is killed (containerd removes the bundle of a task whose shim dies).
  # containerd's metadata names the namespace of every sandbox it holds,
  # one stopped half-way (its task gone) too.
  shims=""
  for proc in /proc/[0-9]*; do
    case "$(cat "$proc/comm" 2>/dev/null)" in
      containerd-shim*)
        tr '\0' '\n' < "$proc/cmdline" 2>/dev/null | grep -qxF "$containerd/containerd.sock" &&
          shims="$shims ${proc#/proc/}" ;;
    esac
  done
  sandboxes="$(ls "$containerd/state/io.containerd.runtime.v2.task/k8s.io" 2>/dev/null)"
  networks="$(cat "$containerd"/state/io.containerd.runtime.v2.task/*/*/config.json \
    "$containerd/root/io.containerd.metadata.v1.bolt/meta.db" 2>/dev/null |
    grep -ao '/var/run/netns/cni-[0-9a-f-]\{1,\}' | sort -u)"
  # The containers' processes, by runc's state under the data dir.
  for state in "$containerd"/runc/k8s.io/*/state.json; do
    [ -f "$state" ] || continue
    runc --root "$containerd/runc/k8s.io" kill "$(basename "$(dirname "$state")")" KILL 2>/dev/null
  done
  # Then the shims, and containerd by the pid the agent wrote, if it
  # still names containerd.
  for shim in $shims; do kill -KILL "$shim" 2>/dev/null; done
  pid="$(cat "$containerd/containerd.pid" 2>/dev/null)"
  case "$(cat "/proc/${pid:-0}/comm" 2>/dev/null)" in
    containerd) kill -KILL "$pid" 2>/dev/null ;;
  esac
  # Then the pods' network namespaces (with them, their veths).
  for netns in $networks; do
    umount "$netns" 2>/dev/null
    rm -f "$netns"
  done
  # And the node ports the CNI portmap plugin forwarded to pods whose
  # sandboxes were not torn down: its rules name the sandbox.
  command -v iptables > /dev/null || continue
  for id in $sandboxes; do
    iptables -w -t nat -L CNI-HOSTPORT-DNAT -n --line-numbers 2>/dev/null |
      grep -F "id: \"$id\"" | sort -rn | while read -r num target _; do
        iptables -w -t nat -D CNI-HOSTPORT-DNAT "$num"
        case "$target" in
          CNI-DN-*) iptables -w -t nat -F "$target" && iptables -w -t nat -X "$target" ;;
        esac
      done
  done
done
grep -o " $dir[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
ip link delete skiff0 2>/dev/null
nft delete table ip skiff 2>/dev/null
nft delete table ip skiff-policy 2>/dev/null
for range in 10.42.0.0/16 10.43.0.0/16; do ip route delete unreachable "$range" 2>/dev/null; done
rm -rf "$dir"
echo "cleaned up $dir"
