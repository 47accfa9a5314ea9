#!/usr/bin/env bash
# Installs the Debian packages Skiff needs on this machine (Debian 12):
#   to build:        protobuf-compiler libprotobuf-dev (etcd and CRI bindings),
#                    make (the jemalloc allocator's C build)
#   to run pods:     containerd runc containernetworking-plugins (containers,
#                    pod network), nftables iproute2 (Services, routes)
# With --test, also what the test suite drives: etcd-server (the store
# suite), busybox-static umoci skopeo (the test image), docker-registry
# apache2-utils (image pulls, and htpasswd for a registry that wants
# credentials), procps util-linux (process and terminal tools), curl (an
# HTTP/2 client as strict as users' about stream resets), and what
# the client libraries' own suites need: python3-venv (the Python
# client's), pkg-config libssl-dev (kube-rs's openssl feature), jq, file.
set -euo pipefail

packages=(protobuf-compiler libprotobuf-dev make containerd runc containernetworking-plugins nftables iproute2 tzdata)
if [ "${1:-}" = "--test" ]; then
  packages+=(etcd-server busybox-static umoci skopeo docker-registry apache2-utils procps util-linux curl
    python3-venv pkg-config libssl-dev jq file)
fi

missing=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup.sh: run as root (or install sudo)" >&2; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
