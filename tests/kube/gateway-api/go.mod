// Pins the Gateway API release whose standard-channel CRDs (HTTPRoute, the
// mesh profile's routes) the tests install: build.sh copies them from the
// module's config/crd/standard/ into the cache. Nothing is built from it.
module weft.dev/tests/kube/gateway-api

go 1.26.0

require sigs.k8s.io/gateway-api v1.6.3
