# Sourced by the scripts here: the Go toolchain and the caches outside the
# clone, shared by every checkout and kept between CI runs.
WEFT_KUBE_CACHE="${WEFT_KUBE_CACHE:-/var/cache/weft}"
export GOMODCACHE="${GOMODCACHE_OVERRIDE:-$WEFT_KUBE_CACHE/go/mod}"
export GOCACHE="${GOCACHE_OVERRIDE:-$WEFT_KUBE_CACHE/go/cache}"
# The toolchain the go.mod files ask for is the one installed here; never
# download another one.
export GOTOOLCHAIN=local
# The caller's GOFLAGS (say -mod=vendor) must not change a pinned build;
# -modcacherw lets anyone delete the module cache.
export GOFLAGS="-modcacherw -mod=readonly"
export CGO_ENABLED=0
# Go lives in /usr/local/go on these machines; a non-login PATH may lack it.
if command -v go >/dev/null 2>&1; then
  GO="$(command -v go)"
elif [ -x /usr/local/go/bin/go ]; then
  GO=/usr/local/go/bin/go
else
  echo "tests/kube: no Go toolchain: neither \`go\` on PATH nor /usr/local/go/bin/go." >&2
  echo "tests/kube: install Go >= 1.26 from https://go.dev/dl/ into /usr/local/go" >&2
  echo "tests/kube: (Debian's golang package is older than the modules require)." >&2
  exit 1
fi
mkdir -p "$GOMODCACHE" "$GOCACHE"
