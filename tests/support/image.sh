#!/usr/bin/env bash
# Build an image tarball (the `docker save` layout: manifest.json, a config, one layer) from files on
# this machine, for `ctr images import`; no registry, no Docker engine.
#
#   tests/support/image.sh busybox  OUT.tar NAME:TAG           Debian's busybox-static with its applets
#   tests/support/image.sh pause    OUT.tar NAME:TAG           the same, sleeping (the sandbox image)
#   tests/support/image.sh lockstep OUT.tar NAME:TAG BINARY    the operator as the Dockerfile's final
#                                                              stage has it: /usr/local/bin/lockstep, the
#                                                              shared libraries it links (from ldd),
#                                                              the CA bundle, uid/gid 65532, no shell
set -euo pipefail

kind="$1" out="$2" ref="$3"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
mkdir -p "$rootfs"/{etc,tmp,home/nonroot} "$(dirname "$out")"
chmod 1777 "$rootfs/tmp"
cat >"$rootfs/etc/passwd" <<'P'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
P
printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$rootfs/etc/group"

busybox_rootfs() {
  mkdir -p "$rootfs/bin"
  cp /bin/busybox "$rootfs/bin/busybox"
  local a
  for a in $(/bin/busybox --list); do [[ "$a" == busybox ]] || ln -s busybox "$rootfs/bin/$a"; done
}

case "$kind" in
  busybox)
    busybox_rootfs
    config='"User":"0:0","Env":["PATH=/bin"],"Cmd":["sh"],"WorkingDir":"/"' ;;
  pause)
    busybox_rootfs
    config='"User":"65532:65532","Env":["PATH=/bin"],"Entrypoint":["/bin/sleep","2147483647"],"WorkingDir":"/"' ;;
  lockstep)
    bin="$4"
    install -D -m 0755 "$bin" "$rootfs/usr/local/bin/lockstep"
    # A debug build carries ~350 MB of debug info the image does not need (the release one is stripped).
    if command -v strip >/dev/null; then strip --strip-debug "$rootfs/usr/local/bin/lockstep"; fi
    # The dynamic loader and every library the binary links against, at the paths ldd names.
    for lib in $(ldd "$bin" | awk '/=>/ {print $3} /^[[:space:]]*\// {print $1}' | sort -u); do
      install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
    done
    # The CA bundle distroless ships (the AWS SDK's TLS client loads the native roots).
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    chown 65532:65532 "$rootfs/home/nonroot"
    config='"User":"65532:65532","Env":["PATH=/usr/local/bin:/usr/bin:/bin"],"Entrypoint":["/usr/local/bin/lockstep"],"Cmd":["run","--metrics-addr=0.0.0.0:8080"],"ExposedPorts":{"8080/tcp":{}},"WorkingDir":"/home/nonroot"' ;;
  *) echo "image.sh: unknown image $kind" >&2; exit 2 ;;
esac

tar -C "$rootfs" --numeric-owner --sort=name --mtime=@0 -cf "$work/layer.tar" .
diff_id="$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
mkdir -p "$work/out/$diff_id"
mv "$work/layer.tar" "$work/out/$diff_id/layer.tar"
printf '{"architecture":"amd64","os":"linux","config":{%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$config" "$diff_id" >"$work/config.json"
cfg="$(sha256sum "$work/config.json" | cut -d' ' -f1)"
mv "$work/config.json" "$work/out/$cfg.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$cfg" "$ref" "$diff_id" >"$work/out/manifest.json"
tar -C "$work/out" --sort=name --mtime=@0 -cf "$out.tmp" .
mv -f "$out.tmp" "$out"
