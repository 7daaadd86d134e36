#!/usr/bin/env bash
# Development TLS material for authgate, made with openssl, in this folder:
#   dev-ca.pem, dev-ca-key.pem   a local CA (10 years)
#   dev-cert.pem                 server certificate for localhost, 127.0.0.1 and ::1,
#                                followed by the CA certificate (the chain)
#   dev-key.pem                  the server's private key (PKCS#8, EC P-256)
# Idempotent: keeps what exists and is still valid; `--force` makes everything anew.
# For development only: trust dev-ca.pem in a client with e.g. `curl --cacert certs/dev-ca.pem`.
set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$DIR"

CA_CERT=dev-ca.pem
CA_KEY=dev-ca-key.pem
CERT=dev-cert.pem
KEY=dev-key.pem
CA_DAYS=3650
CERT_DAYS=825   # the longest lifetime some TLS clients accept for a server certificate
RENEW_SECONDS=$((30 * 24 * 3600))

force=false
case "${1:-}" in
  "") ;;
  --force) force=true ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

command -v openssl >/dev/null 2>&1 || { echo "gen-dev-certs: openssl is required" >&2; exit 1; }

umask 077
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# A random positive 128-bit serial.
serial() { echo "0x$(openssl rand -hex 16 | sed 's/^./1/')"; }

new_ec_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

ca_ok() {
  [[ -s $CA_CERT && -s $CA_KEY ]] &&
    openssl x509 -in "$CA_CERT" -noout -checkend "$RENEW_SECONDS" >/dev/null 2>&1 &&
    # the key must belong to the certificate
    [[ "$(openssl x509 -in "$CA_CERT" -noout -pubkey)" == "$(openssl pkey -in "$CA_KEY" -pubout)" ]]
}

cert_ok() {
  [[ -s $CERT && -s $KEY ]] &&
    openssl x509 -in "$CERT" -noout -checkend "$RENEW_SECONDS" >/dev/null 2>&1 &&
    openssl verify -CAfile "$CA_CERT" "$CERT" >/dev/null 2>&1 &&
    [[ "$(openssl x509 -in "$CERT" -noout -pubkey)" == "$(openssl pkey -in "$KEY" -pubout)" ]]
}

make_ca() {
  echo "gen-dev-certs: creating the development CA ($CA_CERT)"
  cat >"$work/ca.cnf" <<'CNF'
[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
CN = authgate development CA
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CNF
  new_ec_key "$work/ca-key.pem"
  openssl req -new -x509 -config "$work/ca.cnf" -key "$work/ca-key.pem" -sha256 \
    -days "$CA_DAYS" -set_serial "$(serial)" -out "$work/ca.pem"
  mv "$work/ca-key.pem" "$CA_KEY"
  chmod 644 "$work/ca.pem"
  mv "$work/ca.pem" "$CA_CERT"
}

make_cert() {
  echo "gen-dev-certs: creating the server certificate ($CERT, $KEY)"
  cat >"$work/server.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = localhost
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
CNF
  new_ec_key "$work/key.pem"
  openssl req -new -config "$work/server.cnf" -key "$work/key.pem" -sha256 -out "$work/server.csr"
  openssl x509 -req -in "$work/server.csr" -CA "$CA_CERT" -CAkey "$CA_KEY" \
    -set_serial "$(serial)" -days "$CERT_DAYS" -sha256 \
    -extfile "$work/server.cnf" -extensions server -out "$work/cert.pem"
  cat "$work/cert.pem" "$CA_CERT" >"$work/chain.pem"
  chmod 644 "$work/chain.pem"
  mv "$work/key.pem" "$KEY"
  mv "$work/chain.pem" "$CERT"
}

if $force || ! ca_ok; then
  make_ca
  make_cert
elif ! cert_ok; then
  make_cert
else
  echo "gen-dev-certs: certificates in $DIR are present and valid; nothing to do (--force to renew)"
  exit 0
fi

openssl verify -CAfile "$CA_CERT" "$CERT"
echo "gen-dev-certs: done. Use cert = \"certs/$CERT\" and key = \"certs/$KEY\" under [server.tls]."
