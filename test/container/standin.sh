#!/usr/bin/env bash
# Builds a local stand-in for the official `denoland/deno:debian-2.9.6` image, for machines that cannot pull
# from Docker Hub (the container test's only special case: the Dockerfile's BASE_IMAGE argument points here).
#
# What the official Debian image is (github.com/denoland/deno_docker, debian.dockerfile and _entry.sh):
#   FROM debian:stable-slim (trixie since August 2025); user and group `deno` with uid/gid 1993 and no home
#   directory; /deno-dir/ owned by deno; ENV DENO_USE_CGROUPS=1 DENO_DIR=/deno-dir/ DENO_INSTALL_ROOT=/usr/local
#   DENO_VERSION=<version>; the deno binary at /usr/bin/deno; tini's static binary at /tini;
#   /usr/local/bin/docker-entrypoint.sh, which execs `deno "$@"` when the first argument is a flag or a deno
#   subcommand and `"$@"` otherwise; ENTRYPOINT ["/tini", "--", "docker-entrypoint.sh"]; no USER (root).
# This script rebuilds those facts from Debian packages (debootstrap, minbase variant) plus the deno binary on
# this machine, which must be the pinned version.
#
# Usage: test/container/standin.sh [--rebuild]    (root; needs buildah and debootstrap)
# Env:   STANDIN_IMAGE (default localhost/trellis/deno-standin:debian-2.9.6), DEBIAN_SUITE (default trixie),
#        DEBIAN_MIRROR (default http://deb.debian.org/debian), DENO_BIN (default: `command -v deno`),
#        STANDIN_CA_BUNDLE (default: $SSL_CERT_FILE when set): a PEM bundle that deno in the image should trust.
#
# The one deviation from the official image: where this machine's egress re-signs TLS with its own authority
# (deno's built-in Mozilla roots then reject registry.npmjs.org), STANDIN_CA_BUNDLE is copied to
# /etc/ssl/certs/ca-certificates.crt and DENO_TLS_CA_STORE=mozilla,system is set, so that `deno install` in the
# Dockerfile can download npm packages. Images built on the stand-in inherit that variable; the server itself
# runs with --cached-only and opens no TLS connection.
# Prints the image name on its last line of stdout.
set -euo pipefail

want_deno=2.9.6
image=${STANDIN_IMAGE:-localhost/trellis/deno-standin:debian-$want_deno}
suite=${DEBIAN_SUITE:-trixie}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
deno_bin=${DENO_BIN:-$(command -v deno || true)}
ca_bundle=${STANDIN_CA_BUNDLE-${SSL_CERT_FILE:-}}
bah=(buildah --storage-driver vfs)

die() {
  echo "standin: $*" >&2
  exit 1
}

[[ $(id -u) == 0 ]] || die "must run as root (debootstrap and buildah mount need it)"
command -v buildah >/dev/null || die "buildah not found: apt-get install -y buildah debootstrap"
command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install -y buildah debootstrap"
[[ -x $deno_bin ]] || die "deno binary not found (set DENO_BIN)"
have=$("$deno_bin" --version | awk 'NR==1{print $2}')
[[ $have == "$want_deno" ]] || die "deno at $deno_bin is $have, expected $want_deno (set DENO_BIN)"
[[ -z $ca_bundle || -r $ca_bundle ]] || die "STANDIN_CA_BUNDLE $ca_bundle is not a readable file"

if [[ ${1:-} != "--rebuild" ]] && "${bah[@]}" inspect --type image "$image" >/dev/null 2>&1; then
  echo "standin: $image exists (pass --rebuild to rebuild it)" >&2
  echo "$image"
  exit 0
fi

ctr=$("${bah[@]}" from scratch)
cleanup() { "${bah[@]}" rm "$ctr" >/dev/null 2>&1 || true; }
trap cleanup EXIT
root=$("${bah[@]}" mount "$ctr")

echo "standin: debootstrap $suite (minbase) from $mirror" >&2
# tini comes from Debian here (the official image downloads the same static binary from tini's releases).
debootstrap --variant=minbase --include=tini "$suite" "$root" "$mirror" >&2
install -m 755 "$root/usr/bin/tini-static" "$root/tini"
chroot "$root" dpkg --purge tini >&2

chroot "$root" useradd --uid 1993 --user-group deno
install -d -o 1993 -g 1993 "$root/deno-dir"
install -m 755 "$deno_bin" "$root/usr/bin/deno"

# Same behaviour as the official image's entry script: deno subcommands and flags go to deno, anything else runs.
cat >"$root/usr/local/bin/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
set -e
case "$1" in
  -*) exec deno "$@" ;;
  add | bench | bundle | cache | check | compile | completions | coverage | doc | eval | fmt | help | info | \
    init | install | jupyter | lint | lsp | publish | remove | repl | run | serve | task | test | types | \
    uninstall | upgrade | vendor) exec deno "$@" ;;
esac
exec "$@"
EOF
chmod 755 "$root/usr/local/bin/docker-entrypoint.sh"

# What debian:stable-slim leaves out or cleans.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/var/log/*.log "$root"/tmp/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
ca_env=()
if [[ -n $ca_bundle ]]; then
  echo "standin: deno will trust $ca_bundle (DENO_TLS_CA_STORE=mozilla,system)" >&2
  install -D -m 644 "$ca_bundle" "$root/etc/ssl/certs/ca-certificates.crt"
  ca_env=(--env DENO_TLS_CA_STORE=mozilla,system)
fi
"${bah[@]}" umount "$ctr" >/dev/null

"${bah[@]}" config \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env DENO_USE_CGROUPS=1 \
  --env DENO_DIR=/deno-dir/ \
  --env DENO_INSTALL_ROOT=/usr/local \
  --env DENO_VERSION=$want_deno \
  "${ca_env[@]}" \
  --entrypoint '["/tini", "--", "docker-entrypoint.sh"]' \
  --cmd '["eval", "console.log('"'"'Welcome to Deno!'"'"')"]' \
  --label org.opencontainers.image.description="Local stand-in for denoland/deno:debian-$want_deno" \
  "$ctr"
"${bah[@]}" commit --format docker --rm "$ctr" "$image" >&2
trap - EXIT
echo "$image"
