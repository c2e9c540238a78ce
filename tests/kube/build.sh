#!/usr/bin/env bash
# Builds the tests' Kubernetes control plane from Go modules:
#
#   etcd, kube-apiserver, kube-controller-manager, kubectl, helm
#
# into /var/cache/weft/kube/<kubernetes-version>/bin/ (WEFT_KUBE_CACHE
# changes /var/cache/weft), with the module and build caches under
# /var/cache/weft/go/, all outside the clone so every checkout and CI run
# reuses them. A binary already built from the same go.mod and go.sum is
# skipped, so a warm run takes a second. Runs unattended (no stdin, no
# prompts); any failure stops it with a non-zero exit.
#
#   bash tests/kube/build.sh          # what CI runs before the tests
#   nice bash tests/kube/build.sh     # on a shared machine
#
# A cold build took 7 minutes on 2 cores (see tests/kube/README.md).
set -Eeuo pipefail
shopt -s nullglob
exec </dev/null

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=env.sh
. "$here/env.sh"

say() { echo "kube-build: $*"; }
die() {
  echo "kube-build: FAILED: $*" >&2
  exit 1
}
trap 'echo "kube-build: FAILED at line $LINENO (exit $?): $BASH_COMMAND" >&2' ERR

# The pinned versions, read from the wrapper modules.
pinned() { # MODULE-DIR MODULE-PATH
  local v
  v="$(awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$here/$1/go.mod")"
  [ -n "$v" ] || die "tests/kube/$1/go.mod does not require $2"
  echo "$v"
}
kube_version="$(pinned kubernetes k8s.io/kubernetes)"
etcd_version="$(pinned etcd go.etcd.io/etcd/server/v3)"
helm_version="$(pinned helm helm.sh/helm/v4)"
gateway_version="$(pinned gateway-api sigs.k8s.io/gateway-api)"
cert_manager_version="$(pinned cert-manager github.com/cert-manager/cert-manager)"
[[ "$kube_version" =~ ^v1\.([0-9]+)\.[0-9]+$ ]] || die "unexpected Kubernetes version $kube_version"
kube_minor="${BASH_REMATCH[1]}"

bin_dir="$WEFT_KUBE_CACHE/kube/$kube_version/bin"
mkdir -p "$bin_dir"
# Two builds at once (two CI jobs on one machine) would only waste the CPU.
exec 9>"$bin_dir/.lock"
if ! flock -n 9; then
  say "another build holds $bin_dir/.lock; waiting for it"
  flock 9
fi

say "$("$GO" version) at $GO"
say "Kubernetes $kube_version, etcd $etcd_version, helm $helm_version -> $bin_dir"
say "GOMODCACHE=$GOMODCACHE GOCACHE=$GOCACHE"
total_start=$SECONDS

# build NAME MODULE-DIR PACKAGE LDFLAGS: builds one binary unless the one in
# bin_dir was built from the same go.mod, go.sum, package and flags.
build() {
  local name="$1" dir="$2" pkg="$3" ldflags="$4"
  local stamp key start
  stamp="$bin_dir/.$name.stamp"
  key="$(cat "$here/$dir/go.mod" "$here/$dir/go.sum" "$here/$dir"/*.go | sha256sum | cut -d' ' -f1) $pkg $ldflags"
  if [ -x "$bin_dir/$name" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
    say "$name: already built, skipped"
    return
  fi
  say "$name: building $pkg (tests/kube/$dir) ..."
  start=$SECONDS
  (
    cd "$here/$dir"
    "$GO" build -trimpath -buildvcs=false -ldflags "-s -w $ldflags" -o "$bin_dir/.$name.tmp" "$pkg"
  ) || die "$name: go build failed after $((SECONDS - start)) s"
  mv -f "$bin_dir/.$name.tmp" "$bin_dir/$name"
  echo "$key" >"$stamp"
  say "$name: built in $((SECONDS - start)) s ($(du -h "$bin_dir/$name" | cut -f1))"
}

# Without these, the Kubernetes binaries call themselves v0.0.0-master and
# kubectl warns about version skew.
kube_ldflags="-X k8s.io/component-base/version.gitVersion=$kube_version"
kube_ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
kube_ldflags+=" -X k8s.io/component-base/version.gitMinor=$kube_minor"
kube_ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
kube_ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$kube_version"
kube_ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1"
kube_ldflags+=" -X k8s.io/client-go/pkg/version.gitMinor=$kube_minor"

step_start=$SECONDS
for dir in etcd kubernetes helm gateway-api cert-manager; do
  (cd "$here/$dir" && "$GO" mod download) || die "go mod download in tests/kube/$dir failed"
done
say "modules downloaded or found in the cache in $((SECONDS - step_start)) s"

build etcd etcd . ""
build kube-apiserver kubernetes k8s.io/kubernetes/cmd/kube-apiserver "$kube_ldflags"
build kube-controller-manager kubernetes k8s.io/kubernetes/cmd/kube-controller-manager "$kube_ldflags"
build kubectl kubernetes k8s.io/kubernetes/cmd/kubectl "$kube_ldflags"
build helm helm helm.sh/helm/v4/cmd/helm "-X helm.sh/helm/v4/internal/version.version=$helm_version"

# Each binary must run and report the pinned version.
check() { # NAME EXPECTED COMMAND...
  local name="$1" want="$2" out
  shift 2
  out="$("$@" 2>&1)" || die "$name does not run: $* -> $out"
  grep -qF -- "$want" <<<"$out" || die "$name reports '$out', expected $want"
}
check etcd "${etcd_version#v}" "$bin_dir/etcd" --version
check kube-apiserver "$kube_version" "$bin_dir/kube-apiserver" --version
check kube-controller-manager "$kube_version" "$bin_dir/kube-controller-manager" --version
check kubectl "$kube_version" "$bin_dir/kubectl" version --client -o json
check helm "$helm_version" "$bin_dir/helm" version --short

# The Gateway API's standard-channel CRDs (HTTPRoute for the mesh), copied
# from the pinned, checksum-verified module: the tests install them.
crd_dir="$WEFT_KUBE_CACHE/kube/gateway-api/$gateway_version"
if [ -f "$crd_dir/.complete" ]; then
  say "gateway-api $gateway_version CRDs: already in $crd_dir, skipped"
else
  module_dir="$(cd "$here/gateway-api" && "$GO" mod download -json sigs.k8s.io/gateway-api |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  crds=("$module_dir"/config/crd/standard/gateway.networking.k8s.io_*.yaml)
  [ "${#crds[@]}" -gt 0 ] || die "no CRDs in ${module_dir:-the gateway-api module}/config/crd/standard"
  mkdir -p "$crd_dir"
  cp "${crds[@]}" "$crd_dir/"
  touch "$crd_dir/.complete"
  say "gateway-api $gateway_version CRDs: ${#crds[@]} files in $crd_dir"
fi

# cert-manager's Certificate and Issuer CRDs (the chart's webhook.certManager
# objects are checked against them), copied the same way from the pinned
# module's deploy/crds/ (controller-gen's output, which cert-manager's own
# Helm chart is built from).
cm_dir="$WEFT_KUBE_CACHE/kube/cert-manager/$cert_manager_version"
if [ -f "$cm_dir/.complete" ]; then
  say "cert-manager $cert_manager_version CRDs: already in $cm_dir, skipped"
else
  module_dir="$(cd "$here/cert-manager" && "$GO" mod download -json github.com/cert-manager/cert-manager |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  crds=("$module_dir"/deploy/crds/cert-manager.io_{certificates,issuers,clusterissuers}.yaml)
  for crd in "${crds[@]}"; do
    [ -f "$crd" ] || die "no $(basename "$crd") in ${module_dir:-the cert-manager module}/deploy/crds"
  done
  mkdir -p "$cm_dir"
  cp "${crds[@]}" "$cm_dir/"
  touch "$cm_dir/.complete"
  say "cert-manager $cert_manager_version CRDs: ${#crds[@]} files in $cm_dir"
fi

say "all five binaries in $bin_dir, versions checked, and the Gateway API and cert-manager CRDs, in $((SECONDS - total_start)) s"
