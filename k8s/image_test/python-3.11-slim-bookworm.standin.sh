#!/usr/bin/env bash
# A STAND-IN for the base image k8s/Dockerfile pins by digest (python:3.11-slim-bookworm@sha256:
# 528257d4...), for machines that reach no container registry: Debian bookworm (the same glibc
# 2.36) made with mmdebstrap from Debian's packages, with Debian's python3.11 where the real base
# has its own build in /usr/local. What differs from the real base, and why:
#   - python3.11-dev: the headers pyfarmhash's source build needs (the real base has them);
#   - python-is-python3 and python3-pip give `python` and `pip` (the real base: /usr/local/bin);
#     Debian's "externally managed" marker is removed, as the real base has none;
#   - the build machine's CA bundle, for pip's package index (a proxy's CA, where there is one).
# The image is pushed to the local registry and the image test builds k8s/Dockerfile FROM its
# digest in place of the real one (everything after FROM unchanged).
#
#   bash k8s/image_test/python-3.11-slim-bookworm.standin.sh   -> prints REGISTRY/...@sha256:...
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/common.sh"
name="$IMAGE_TEST_REGISTRY/python-3.11-slim-bookworm-standin"
out="$IMAGE_TEST_WORK/base-image.txt"

if [ -s "$out" ] && curl -fsS "http://$IMAGE_TEST_REGISTRY/v2/${name#*/}/manifests/$(cut -d@ -f2 "$out")" \
     -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
     -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' >/dev/null 2>&1; then
  echo "== base stand-in already built: $(cat "$out")"; exit 0
fi
echo "== building the base stand-in with mmdebstrap (bookworm, minbase)"
ca_bundle="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
tarball="$IMAGE_TEST_WORK/base.tar"
mmdebstrap --variant=minbase --mode=root \
  --include=python3.11,python3.11-dev,python3-pip,python-is-python3,ca-certificates \
  --customize-hook="rm -f \"\$1\"/usr/lib/python3.11/EXTERNALLY-MANAGED" \
  --customize-hook="cp '$ca_bundle' \"\$1\"/usr/local/share/ca-bundle.crt" \
  --customize-hook="printf '[global]\ncert = /usr/local/share/ca-bundle.crt\n' > \"\$1\"/etc/pip.conf" \
  --customize-hook="rm -rf \"\$1\"/var/lib/apt/lists/* \"\$1\"/var/cache/apt/*" \
  bookworm "$tarball" http://deb.debian.org/debian
podman_ import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' "$tarball" "$name:latest" >/dev/null
rm -f "$tarball"
podman_ push --tls-verify=false --digestfile "$IMAGE_TEST_WORK/base.digest" "$name:latest" >/dev/null
echo "$name@$(cat "$IMAGE_TEST_WORK/base.digest")" > "$out"
echo "== base stand-in: $(cat "$out")"
