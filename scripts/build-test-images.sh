#!/usr/bin/env bash
# Builds the test images from Debian packages, with no registry, as
# docker-archives in OUT_DIR: busybox (skiff.local/busybox:1, `sh`) and a
# web server standing in for nginx (skiff.local/nginx:1: busybox httpd on
# port 80 serving nginx's welcome page). (The sandbox image needs no
# building: the agent makes its own.)
set -euo pipefail
out="${1:?usage: build-test-images.sh OUT_DIR}"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

build() { # name tag entrypoint...
  local name="$1" tag="$2"; shift 2
  local layout="$work/$name"
  umoci init --layout "$layout" >/dev/null
  umoci new --image "$layout:$tag" >/dev/null
  umoci unpack --rootless --image "$layout:$tag" "$work/$name-bundle" >/dev/null
  local root="$work/$name-bundle/rootfs"
  mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/proc" "$root/sys" "$root/dev"
  cp /bin/busybox "$root/bin/busybox"
  for tool in sh sleep echo cat ls env true false wget httpd nc id hostname ps kill trap printf head tail dd test touch rm mkdir grep tr date tar timeout nslookup tty stty; do
    ln -sf busybox "$root/bin/$tool"
  done
  mkdir -p "$root/www"
  echo '<h1>Welcome to nginx!</h1>' > "$root/www/index.html"
  echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
  echo "root:x:0:" > "$root/etc/group"
  umoci repack --image "$layout:$tag" "$work/$name-bundle" >/dev/null
  umoci config --image "$layout:$tag" --config.env PATH=/bin "$@" >/dev/null
  rm -f "$out/$name.tar"
  skopeo copy --quiet "oci:$layout:$tag" "docker-archive:$out/$name.tar:skiff.local/$name:$tag" >/dev/null
}

build busybox 1 --config.cmd sh
build nginx 1 --config.cmd httpd --config.cmd -f --config.cmd -p --config.cmd 80 --config.cmd -h --config.cmd /www
echo "$out/busybox.tar"
echo "$out/nginx.tar"
