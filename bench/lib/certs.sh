# Certificates for the benchmarks' peers (nginx, HAProxy), shared by the scripts that
# start them. Source it (bash).
# shellcheck shell=bash

# openssl_leaf DIR NAME SAN: an ECDSA P-256 leaf signed by DIR/ca.pem (key DIR/ca-key.pem),
# written as DIR/NAME.pem and DIR/NAME-key.pem; SAN as openssl writes it
# ("URI:spiffe://...,DNS:backend").
openssl_leaf() {
  local d=$1 name=$2 san=$3
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/$name-key.pem" 2>/dev/null
  openssl req -new -key "$d/$name-key.pem" -subj "/O=weft-bench/CN=$name" -out "$d/$name.csr" 2>/dev/null
  cat >"$d/$name.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$san
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
  openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" \
    -set_serial "0x$(openssl rand -hex 16)" -days 2 -sha256 -extfile "$d/$name.ext" \
    -out "$d/$name.pem" 2>/dev/null
}
