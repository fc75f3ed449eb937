# The "app" of the container tests (tests/it/container.rs): a stand-in for the workload that reads
# the sidecar's files. Debian's static busybox on an empty filesystem: cat, ls, sleep, and nc
# to reach the emulator's control API from inside the private network. It also carries the
# `azure-emulator` binary (crates/emulator), which the tests run as the pod's stand-in for Azure. FROM scratch, like the
# sidecar image, so nothing is pulled. Built by scripts/build-test-app-image.sh TAG.
FROM scratch
COPY busybox /bin/busybox
COPY azure-emulator /azure-emulator
COPY --chown=65532:65532 emulator-state/ /emulator-state/
USER 65532:65532
ENTRYPOINT ["/bin/busybox"]
CMD ["sleep", "3600"]
