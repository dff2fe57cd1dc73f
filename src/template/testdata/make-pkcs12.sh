#!/usr/bin/env bash
# Regenerates the PKCS#12 fixtures of src/template/pkcs12.rs's tests with the openssl CLI (3.x, with
# the legacy provider for -legacy). Run from anywhere; it writes next to itself. Every run makes new
# keys, so the tests' expected PEM files are rewritten with them.
#
#   p12-root.pem, p12-int.pem, p12-leaf.pem  a CA, an intermediate CA and a leaf (RSA), each one PEM
#   p12-chain.pem                            leaf, intermediate, root: what pkcs12cert gives back
#   p12-key.pem                              the leaf's key, PKCS#8 PEM (what pkcs12key gives back)
#   p12-key.rsa.pem, p12-ec-key.sec1.pem     the RSA key as PKCS#1, the EC key below as SEC 1
#   p12-pbes2.p12      OpenSSL 3's default: PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC), HMAC-SHA256 MAC;
#                      the chain is written root before intermediate (pkcs12cert orders it)
#   p12-legacy.p12     -legacy: certs pbeWithSHAAnd40BitRC2-CBC, key pbeWithSHAAnd3-KeyTripleDES-CBC,
#                      HMAC-SHA1 MAC; a non-ASCII password
#   p12-empty.p12      the empty password (PBES2 and a MAC, as OpenSSL writes -passout pass:)
#   p12-plain.p12      no encryption and no MAC at all (-keypbe NONE -certpbe NONE -nomac)
#   p12-ec.p12         an EC P-256 key and a self-signed cert (p12-ec-cert.pem, p12-ec-key.pem):
#                      key AES-128-CBC, certs AES-192-CBC, HMAC-SHA512 MAC
#   p12-key-*.p8.der   the leaf key as EncryptedPrivateKeyInfo (what a shrouded key bag holds), for
#                      the ciphers no .p12 above uses: PBES2 with PBKDF2-HMAC-SHA1 and AES-192, PBES2
#                      with 3DES, pbeWithSHAAnd128BitRC2-CBC, pbeWithSHAAnd2-KeyTripleDES-CBC
#   p12-java.p12       written by Java's keytool (if there is one; password changeit): an EC key
#                      without its public point, the key bag before the certificates, 10,000
#                      iterations; p12-java-key.pem (as Go writes it: with the point) and -cert.pem
#   p12-java-legacy.p12  the same with -Dkeystore.pkcs12.legacy: RSA, 3DES and RC2-40, HMAC-SHA1
#                      with 100,000 iterations; p12-java-legacy-key.pem and -cert.pem
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

PASS=p12-test-pass
LEGACY_PASS='pässwörd-legacy'

cat >"$tmp/ca.ext" <<'EOF'
basicConstraints=critical,CA:TRUE
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid:always
EOF
cat >"$tmp/leaf.ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid:always
subjectAltName=DNS:leaf.example.test
EOF

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/root.key" 2>/dev/null
openssl req -new -key "$tmp/root.key" -subj "/CN=p12 test root" -out "$tmp/root.csr"
openssl x509 -req -in "$tmp/root.csr" -signkey "$tmp/root.key" -days 36500 -extfile "$tmp/ca.ext" \
    -out p12-root.pem 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/int.key" 2>/dev/null
openssl req -new -key "$tmp/int.key" -subj "/CN=p12 test intermediate" -out "$tmp/int.csr"
openssl x509 -req -in "$tmp/int.csr" -CA p12-root.pem -CAkey "$tmp/root.key" -CAcreateserial \
    -days 36500 -extfile "$tmp/ca.ext" -out p12-int.pem 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out p12-key.pem 2>/dev/null
openssl req -new -key p12-key.pem -subj "/CN=leaf.example.test" -out "$tmp/leaf.csr"
openssl x509 -req -in "$tmp/leaf.csr" -CA p12-int.pem -CAkey "$tmp/int.key" -CAcreateserial \
    -days 36500 -extfile "$tmp/leaf.ext" -out p12-leaf.pem 2>/dev/null
cat p12-leaf.pem p12-int.pem p12-root.pem >p12-chain.pem
cat p12-root.pem p12-int.pem >"$tmp/cas-unordered.pem"

openssl pkcs12 -export -inkey p12-key.pem -in p12-leaf.pem -certfile "$tmp/cas-unordered.pem" \
    -passout "pass:$PASS" -out p12-pbes2.p12
openssl pkcs12 -export -legacy -inkey p12-key.pem -in p12-leaf.pem -certfile "$tmp/cas-unordered.pem" \
    -passout "pass:$LEGACY_PASS" -out p12-legacy.p12
openssl pkcs12 -export -inkey p12-key.pem -in p12-leaf.pem -certfile "$tmp/cas-unordered.pem" \
    -passout pass: -out p12-empty.p12
openssl pkcs12 -export -inkey p12-key.pem -in p12-leaf.pem -certfile "$tmp/cas-unordered.pem" \
    -keypbe NONE -certpbe NONE -nomac -passout pass: -out p12-plain.p12

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out p12-ec-key.pem 2>/dev/null
openssl req -x509 -new -key p12-ec-key.pem -subj "/CN=ec.example.test" -days 36500 -out p12-ec-cert.pem
openssl rsa -in p12-key.pem -traditional -out p12-key.rsa.pem 2>/dev/null
openssl ec -in p12-ec-key.pem -out p12-ec-key.sec1.pem 2>/dev/null
openssl pkcs12 -export -inkey p12-ec-key.pem -in p12-ec-cert.pem -keypbe aes-128-cbc -certpbe aes-192-cbc \
    -macalg sha512 -passout "pass:$PASS" -out p12-ec.p12

openssl pkcs8 -topk8 -in p12-key.pem -v2 aes-192-cbc -v2prf hmacWithSHA1 -passout "pass:$PASS" \
    -outform DER -out p12-key-pbes2-sha1-aes192.p8.der
openssl pkcs8 -topk8 -in p12-key.pem -v2 des-ede3-cbc -passout "pass:$PASS" \
    -outform DER -out p12-key-pbes2-des3.p8.der
openssl pkcs8 -topk8 -in p12-key.pem -v1 PBE-SHA1-RC2-128 -provider legacy -provider default \
    -passout "pass:$PASS" -outform DER -out p12-key-rc2-128.p8.der
openssl pkcs8 -topk8 -in p12-key.pem -v1 PBE-SHA1-2DES -provider legacy -provider default \
    -passout "pass:$PASS" -outform DER -out p12-key-2des.p8.der

if command -v keytool >/dev/null; then
    rm -f p12-java.p12 p12-java-legacy.p12
    keytool -genkeypair -keystore p12-java.p12 -storetype PKCS12 -storepass changeit -alias app \
        -keyalg EC -groupname secp256r1 -dname CN=java.example.test -validity 36500 2>/dev/null
    keytool -J-Dkeystore.pkcs12.legacy -genkeypair -keystore p12-java-legacy.p12 -storetype PKCS12 \
        -storepass changeit -alias app -keyalg RSA -keysize 2048 -dname CN=java-legacy.example.test \
        -validity 36500 2>/dev/null
    for f in p12-java p12-java-legacy; do
        openssl pkcs12 -legacy -in $f.p12 -nocerts -nodes -passin pass:changeit 2>/dev/null |
            openssl pkey >"$tmp/key.pem"
        if [ $f = p12-java ]; then
            # Through SEC 1 and back, which writes the public point Java left out.
            openssl ec -in "$tmp/key.pem" 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out $f-key.pem
        else
            cp "$tmp/key.pem" $f-key.pem
        fi
        openssl pkcs12 -legacy -in $f.p12 -nokeys -passin pass:changeit 2>/dev/null | openssl x509 -out $f-cert.pem
    done
else
    echo "no keytool: the p12-java fixtures are kept as they are" >&2
fi

rm -f p12-root.srl p12-int.srl
echo "written: $(ls p12-* | tr '\n' ' ')"
