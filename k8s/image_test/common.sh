# Shared by the image test's shell steps: podman as it runs on this kind of machine (Debian's
# podman 4.3 and runc, no systemd): the cgroupfs manager, runc (crun fails on hybrid cgroups),
# host networking, an nproc limit the kernel accepts, and the local registry over plain HTTP.
IMAGE_TEST_REGISTRY="${IMAGE_TEST_REGISTRY:-127.0.0.1:5000}"
IMAGE_TEST_WORK="${IMAGE_TEST_WORK:-/var/tmp/playrecall-image-test}"
podman_() { podman --cgroup-manager=cgroupfs --runtime=runc "$@"; }
