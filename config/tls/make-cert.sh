#!/bin/sh
# Makes a throwaway certificate authority and a server certificate signed by it, for trying
# HTTPS locally (`make cert`) and for the tests, which run this at test time so that no key
# material is ever committed.
#
#   config/tls/make-cert.sh DIR [NAME]
#
# writes into DIR (created if needed):
#   ca.pem          the CA's certificate: what a client trusts (curl --cacert DIR/ca.pem)
#   ca.key          the CA's key (to sign more certificates: a reload test makes a second one)
#   NAME.pem        the server's chain: its certificate, then the CA's
#   NAME.key        the server's private key (mode 600)
# NAME defaults to "server". The server certificate names localhost, 127.0.0.1 and ::1, is
# ECDSA P-256 (what nginx and Go are measured with in loadtest/), and is valid for 30 days;
# GREEN_CERT_KEY=rsa makes an RSA-2048 one instead, GREEN_CERT_DAYS changes its lifetime.
# Needs only the `openssl` command (Debian's openssl package).
set -eu
dir=${1:?usage: make-cert.sh DIR [NAME]}
name=${2:-server}
days=${GREEN_CERT_DAYS:-30}
mkdir -p "$dir"
umask 077

newkey() {
  if [ "${GREEN_CERT_KEY:-ec}" = rsa ]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null
  else
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
  fi
}

if [ ! -f "$dir/ca.pem" ] || [ ! -f "$dir/ca.key" ]; then
  newkey "$dir/ca.key"
  openssl req -x509 -new -key "$dir/ca.key" -days 3650 -subj "/CN=greenhttp test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/ca.pem" 2>/dev/null
fi

newkey "$dir/$name.key"
openssl req -new -key "$dir/$name.key" -subj "/CN=localhost" -out "$dir/$name.csr" 2>/dev/null
cat >"$dir/$name.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
EXT
openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
  -CAcreateserial -days "$days" -extfile "$dir/$name.ext" -out "$dir/$name.crt" 2>/dev/null
cat "$dir/$name.crt" "$dir/ca.pem" >"$dir/$name.pem"
rm -f "$dir/$name.csr" "$dir/$name.ext" "$dir/$name.crt" "$dir/ca.srl"
chmod 644 "$dir/ca.pem" "$dir/$name.pem"
