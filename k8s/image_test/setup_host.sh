#!/usr/bin/env bash
# The image test's host: podman, runc, mmdebstrap and a local registry, from Debian packages only.
#
#   bash k8s/image_test/setup_host.sh      (as root; `make image-test` runs it)
#
# Starts Debian's docker-registry on $IMAGE_TEST_REGISTRY (default 127.0.0.1:5000, loopback only,
# storage under $IMAGE_TEST_WORK/registry) unless it already answers, so images are named by
# digest as a real registry names them, then builds the stand-in of the pipeline image's base
# (python-3.11-slim-bookworm.standin.sh) unless the registry has it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/common.sh"

if [ "$(id -u)" != 0 ]; then
  echo "setup_host.sh: run as root (apt-get, podman as root)" >&2; exit 1
fi
need=()
for tool in podman:podman runc:runc mmdebstrap:mmdebstrap docker-registry:docker-registry curl:curl; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]} (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${need[@]}" uidmap fuse-overlayfs ca-certificates >/dev/null
fi

mkdir -p "$IMAGE_TEST_WORK/registry"
if ! curl -fsS "http://$IMAGE_TEST_REGISTRY/v2/" >/dev/null 2>&1; then
  echo "== starting a local registry on $IMAGE_TEST_REGISTRY"
  cat > "$IMAGE_TEST_WORK/registry.yml" <<YAML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $IMAGE_TEST_WORK/registry}
  delete: {enabled: true}
http: {addr: "$IMAGE_TEST_REGISTRY"}
YAML
  nohup docker-registry serve "$IMAGE_TEST_WORK/registry.yml" \
    >"$IMAGE_TEST_WORK/registry.log" 2>&1 &
  echo $! > "$IMAGE_TEST_WORK/registry.pid"
  for _ in $(seq 50); do
    curl -fsS "http://$IMAGE_TEST_REGISTRY/v2/" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fsS "http://$IMAGE_TEST_REGISTRY/v2/" >/dev/null
fi

bash "$here/python-3.11-slim-bookworm.standin.sh"
