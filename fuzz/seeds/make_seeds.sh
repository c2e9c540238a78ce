#!/usr/bin/env bash
# Writes the starting corpora of every target into $1 (default: ../corpus),
# from hand-written examples, the project's own test YAML and certificates
# made here with openssl. Run once; `cargo fuzz cmin` then keeps what adds
# coverage. Needs python3 and openssl.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../corpus}
mkdir -p "$out"
n=0
seed() { # seed TARGET BYTES...
    local dir="$out/$1"; shift
    mkdir -p "$dir"
    n=$((n + 1))
    printf '%b' "$*" >"$dir/seed-$n"
}

# detect: byte 0 is how the bytes are cut into reads.
for mode in '\x00' '\x01' '\x07' '\xff'; do
    seed detect "${mode}GET / HTTP/1.1\r\nHost: web\r\n\r\n"
    seed detect "${mode}PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00"
    seed detect "${mode}CONNECT web:443 HTTP/1.1\r\n\r\n"
    seed detect "${mode}*1\r\n\$4\r\nPING\r\n"
    seed detect "${mode}\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"
    seed detect "${mode}OPTIONS * HTTP/1.0\n\n"
    seed detect "${mode}M-SEARCH * HTTP/1.1\r\n"
    seed detect "${mode}PRI * HTTP/2.0\r\n\r\nSX"
done

# explicit_target: byte 0 odd means CONNECT.
for t in 'http://web/x' 'http://web:8080/' 'HTTP://Web.Default/a?b=c' 'http://[::1]:80/' \
    'http://127.9.1.2:8080/' 'http://user:pw@web/' 'https://web/' '/x' '*' 'http://we_b/' \
    'http://web.default.svc.cluster.local./' 'http://[fe80::1%25eth0]:80/' 'http://web:65535/'; do
    seed explicit_target "\x00$t"
done
for t in 'web:6379' '127.9.1.4:443' '[::1]:443' 'web' 'web:0' 'web.default:80' '[::ffff:127.0.0.1]:1'; do
    seed explicit_target "\x01$t"
done

# spiffe_id
for s in 'spiffe://cluster.local/ns/default/sa/web' 'spiffe://td-1/ns/a.b/sa/c-d' 'spiffe://td/ns/A_b/sa/x' \
    'spiffe://cluster.local/ns/default/sa/web/extra' 'spiffe:///ns/default/sa/web' 'spiffe://td/ns/../sa/.'; do
    seed spiffe_id "$s"
done

# proxy_config: NAME=value lines.
seed proxy_config "WEFT_PROXY_INBOUND_ADDR=0.0.0.0:4143\nWEFT_PROXY_OUTBOUND_ADDR=127.0.0.1:4140\nWEFT_PROXY_ADMIN_ADDR=127.0.0.1:4191\nWEFT_PROXY_TAP_ADDR=off\n"
seed proxy_config "WEFT_PROXY_INBOUND_DETECT_TIMEOUT=1s\nWEFT_PROXY_OUTBOUND_DETECT_TIMEOUT=250ms\nWEFT_PROXY_INBOUND_OPAQUE_PORTS=25,3306,4000-4010\nWEFT_PROXY_OUTBOUND_OPAQUE_PORTS=\n"
seed proxy_config "WEFT_PROXY_MAX_HEADER_BYTES=65536\nWEFT_PROXY_HEADER_READ_TIMEOUT=10s\nWEFT_PROXY_CONNECT_TIMEOUT=1s\nWEFT_PROXY_REQUEST_TIMEOUT=0s\nWEFT_PROXY_TCP_IDLE_TIMEOUT=1h\nWEFT_PROXY_POOL_IDLE_TIMEOUT=90s\n"
seed proxy_config "WEFT_PROXY_MAX_CONNECTIONS=10000\nWEFT_PROXY_DRAIN_TIMEOUT=30s\nWEFT_PROXY_WORKER_THREADS=2\nWEFT_PROXY_LOG=info,weft_proxy=debug\nWEFT_PROXY_EXPLICIT_PROXY=true\n"
seed proxy_config "WEFT_PROXY_CONTROL_PLANE=http://198.18.0.1:8090\nWEFT_PROXY_WORKLOAD_NAME=web-0\nWEFT_PROXY_NAMESPACE=default\nWEFT_PROXY_SERVICE_ACCOUNT=web\nWEFT_PROXY_WORKLOAD_LABELS=app=web,version=v1\nWEFT_PROXY_WORKLOAD_ADDRESS=127.9.1.2\nWEFT_PROXY_WORKLOAD_PORTS=8080,9000-9002\nWEFT_PROXY_DEREGISTER_GRACE=2s\n"
seed proxy_config "WEFT_PROXY_CONTROL_PLANE=https://weft-control.weft-system.svc:8090\nWEFT_PROXY_POD_NAME=web-5d8f\nWEFT_PROXY_TRUST_ANCHORS_PEM=-----BEGIN CERTIFICATE-----\nWEFT_PROXY_TRUST_DOMAIN=cluster.local\nWEFT_PROXY_CONTROL_PLANE_NAME=weft-control.weft-system.svc\nWEFT_PROXY_DISCOVERY_TIMEOUT=5s\nWEFT_PROXY_POLICY_TIMEOUT=1s\nWEFT_PROXY_DEFAULT_INBOUND_POLICY=allow-authenticated\nWEFT_PROXY_ID=web-5d8f.default\n"
seed proxy_config "WEFT_PROXY_ADMIN_ADDR=localhost\nWEFT_PROXY_INBOUND_DETECT_TIMEOUT=soon\nWEFT_PROXY_MAX_HEADER_BYTES=12\nWEFT_PROXY_OUTBOUND_OPAQUE_PORTS=80,70000\nWEFT_PROXY_MAX_CONNECTIONS=0\nWEFT_PROXY_LOG=[{a=1}]\n"

# admission_review
review() { # OPERATION KIND OBJECT
    printf '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002","kind":{"group":"","version":"v1","kind":"%s"},"operation":"%s","namespace":"shop","object":%s}}' "$2" "$1" "$3"
}
pod_app='{"metadata":{"generateName":"web-"},"spec":{"containers":[{"name":"app","image":"web"}]}}'
pod_full='{"metadata":{"name":"web-1","namespace":"shop","labels":{"app":"web"},"annotations":{"config.weft.dev/skip-inbound-ports":"9000,9100-9102","config.weft.dev/skip-outbound-ports":"5432","config.weft.dev/opaque-ports":"6379","config.weft.dev/proxy-cpu-request":"100m","config.weft.dev/proxy-memory-request":"64Mi","config.weft.dev/proxy-memory-limit":"1Gi"}},"spec":{"initContainers":[{"name":"migrate","image":"m"}],"containers":[{"name":"app","image":"web","ports":[{"containerPort":8080}]}],"serviceAccountName":"web","volumes":[{"name":"data","emptyDir":{}}]}}'
pod_off='{"metadata":{"annotations":{"weft.dev/inject":"disabled"}},"spec":{"containers":[{"name":"app"}]}}'
pod_host='{"spec":{"hostNetwork":true,"containers":[{"name":"app"}]}}'
pod_linkerd='{"spec":{"containers":[{"name":"app"},{"name":"linkerd-proxy"}]}}'
for obj in "$pod_app" "$pod_full" "$pod_off" "$pod_host" "$pod_linkerd"; do
    n=$((n + 1)); mkdir -p "$out/admission_review"; review CREATE Pod "$obj" >"$out/admission_review/seed-$n"
done
n=$((n + 1)); review UPDATE Pod "$pod_app" >"$out/admission_review/seed-$n"
n=$((n + 1)); review CREATE Deployment '{}' >"$out/admission_review/seed-$n"
seed admission_review '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}'
seed admission_review '{"apiVersion":"v1","kind":"Pod"}'

# policy_yaml and meshfile: the YAML in the project's tests and examples.
python3 "$here/extract_yaml.py" "$here/../.." "$out"

# cert_san and csr: DER certificates and requests, made with openssl.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/key.pem" 2>/dev/null
openssl genrsa -out "$tmp/rsa.pem" 1024 2>/dev/null
mkdir -p "$out/cert_san" "$out/csr"
i=0
for san in 'URI:spiffe://cluster.local/ns/default/sa/web' \
    'URI:spiffe://cluster.local/ns/default/sa/web,DNS:web.default.svc' \
    'URI:spiffe://cluster.local/ns/default/sa/web,URI:spiffe://cluster.local/ns/default/sa/db' \
    'DNS:web.default.svc,IP:127.0.0.1' 'URI:https://example.invalid/x' 'email:a@b.invalid'; do
    i=$((i + 1))
    openssl req -new -x509 -key "$tmp/key.pem" -subj /CN=web -days 1 -addext "subjectAltName=$san" \
        -outform DER -out "$out/cert_san/seed-$i" 2>/dev/null
    openssl req -new -key "$tmp/key.pem" -subj /CN=web -addext "subjectAltName=$san" \
        -outform DER -out "$out/csr/seed-$i" 2>/dev/null
done
openssl req -new -x509 -key "$tmp/key.pem" -subj /CN=web -days 1 -outform DER -out "$out/cert_san/seed-nosan" 2>/dev/null
openssl req -new -key "$tmp/rsa.pem" -subj /CN=web -addext 'subjectAltName=URI:spiffe://cluster.local/ns/default/sa/web' \
    -outform DER -out "$out/csr/seed-rsa" 2>/dev/null
openssl req -new -key "$tmp/key.pem" -subj /CN=web -addext 'basicConstraints=critical,CA:TRUE' \
    -addext 'subjectAltName=URI:spiffe://cluster.local/ns/default/sa/web' -outform DER -out "$out/csr/seed-ca" 2>/dev/null
echo "seeds written to $out: $(find "$out" -type f | wc -l) files"
