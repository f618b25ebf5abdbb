#!/bin/sh
# Makes the TLS certificates for NATS clients and routes (deploy/README.md, "TLS"):
#   sh deploy/nats/make-certs.sh OUT_DIR [NAME ...]
# OUT_DIR/ca.pem + ca-key.pem: a private CA (keep ca-key.pem offline);
# OUT_DIR/server.pem + server-key.pem: the nats-servers' certificate, valid for
#   every NAME (host names or IP addresses; default: localhost 127.0.0.1 and the
#   k8s service names nats, nats-<i>.nats.eunomia.svc.cluster.local);
# OUT_DIR/client.pem + client-key.pem: a client certificate for mutual TLS.
# Keys are 0600. Re-running keeps an existing CA and re-issues the rest.
set -eu
out=${1:?usage: make-certs.sh OUT_DIR [NAME ...]}
shift
[ $# -gt 0 ] || set -- localhost 127.0.0.1 nats nats.eunomia.svc.cluster.local \
  nats-0.nats.eunomia.svc.cluster.local nats-1.nats.eunomia.svc.cluster.local \
  nats-2.nats.eunomia.svc.cluster.local
umask 077
mkdir -p "$out"
cd "$out"
san=""
for n in "$@"; do
  case $n in
    *[!0-9.]*) san="$san,DNS:$n" ;;
    *) san="$san,IP:$n" ;;
  esac
done
san=${san#,}
if [ ! -s ca.pem ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=eunomia-nats-ca" -keyout ca-key.pem -out ca.pem 2>/dev/null
fi
issue() {  # name, extendedKeyUsage, subjectAltName
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=eunomia-$1" \
    -keyout "$1-key.pem" -out "$1.csr" 2>/dev/null
  printf 'extendedKeyUsage=%s\nsubjectAltName=%s\n' "$2" "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 825 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue server serverAuth,clientAuth "$san"   # clientAuth too: routes are mutual TLS between servers
issue client clientAuth "DNS:eunomia-client"
chmod 600 ./*-key.pem
echo "certificates in $out: ca.pem server.pem server-key.pem client.pem client-key.pem"
