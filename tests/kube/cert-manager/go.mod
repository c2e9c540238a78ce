// Pins the cert-manager release whose CRDs (Certificate, Issuer) the tests
// install, so that the chart's cert-manager objects (webhook.certManager)
// are checked by the real API server against cert-manager's own schemas:
// build.sh copies them from the module's deploy/crds/ into the cache.
// Nothing is built from it.
module weft.dev/tests/kube/cert-manager

go 1.26.0

require github.com/cert-manager/cert-manager v1.21.2
