//! PURE: PKCS#12 (`.p12` / `.pfx`) files read and written for the template functions `pkcs12key`,
//! `pkcs12cert`, `pemToPkcs12`, `fullPemToPkcs12` and their `...Pass` forms ([`super::funcs`]),
//! as External Secrets reads and writes them through go-pkcs12 (`DecodeChain`, `Modern.Encode`).
//!
//! Read: DER files of password integrity (a MAC, HMAC-SHA-1/256/384/512 with the PKCS#12 KDF of
//! RFC 7292 B.2, verified before anything is decrypted) or none at all (no MAC is accepted only
//! with the empty password), holding data and password-encrypted parts: PBES2 (PBKDF2 with
//! HMAC-SHA-1/256/384/512; AES-128/192/256-CBC or 3DES-CBC), as OpenSSL 3 writes by default, and
//! the legacy PKCS#12 PBEs `pbeWithSHAAnd3-KeyTripleDES-CBC`, `...2-KeyTripleDES-CBC`,
//! `...128BitRC2-CBC` and `...40BitRC2-CBC` (OpenSSL `-legacy`, Java and Windows exports). As
//! go-pkcs12: version 3, exactly one private key (key bag or shrouded key bag), at least one
//! certificate, the first certificate is the leaf and the others the chain, other bags ignored, the
//! empty password also tried as no password at all, and the key given back as Go's
//! `x509.MarshalPKCS8PrivateKey` writes it (RSA, ECDSA P-224/256/384/521, Ed25519 or X25519).
//! Unlike it: any number of parts in the authenticated safe (go-pkcs12 takes one or two), and
//! iteration counts above [`MAX_ITERATIONS`] are refused (a file could make a render spin for
//! minutes). PBMAC1 (RFC 9579) MACs and BER (indefinite-length) files are not read.
//!
//! Written: what go-pkcs12's `Modern` encoder writes (and OpenSSL 3 by default): the certificates
//! in one PBES2-encrypted part (leaf first, with a localKeyId of the leaf's SHA-1, then the chain),
//! the key in a PBES2 shrouded key bag (same localKeyId) in a data part; PBES2 is
//! PBKDF2-HMAC-SHA256 with 2048 iterations and AES-256-CBC; the MAC HMAC-SHA256, key from the
//! PKCS#12 KDF with SHA-256 and 2048 iterations. `openssl pkcs12 -info` reads it.
//!
//! Unlike go-pkcs12 the output is the same for the same inputs: salts and IVs are not random (see
//! [`Salts`]), so a Secret rendered again holds the same bytes and nothing watching it restarts.
//!
//! Crates: the ASN.1 is read with the small DER reader of [`super::funcs`] and written by hand;
//! the primitives are RustCrypto's (`aes`, `des`, `rc2`, `cbc`, `pbkdf2`, `hmac`, `sha1`, `sha2`),
//! which share `cipher`/`digest` and are pure Rust. `p12-keystore` was considered: it reads the
//! legacy PBEs too, but pulls `x509-parser`, `cms`, `pkcs5`/`pkcs8`/`pkcs12`/`der` (release
//! candidates) and `rand`, and its writer draws random salts, so it cannot give the deterministic
//! output a Secret needs; its decode would still have to be reshaped to go-pkcs12's rules.
//!
//! Errors say what is wrong with the file (an unsupported algorithm is named by its OID), never a
//! byte of it, of the password or of what it holds.

use hmac::{Hmac, KeyInit, Mac};
use sha2::digest::block_api::{BlockSizeUser, EagerHash};
use sha2::digest::{Digest, OutputSizeUser};

use super::funcs::{der, der_seq, der_tlv, der_uint};

/// Iteration counts (MAC, PBKDF2, PKCS#12 KDF) above this are refused. Real files use 1 to
/// 600,000 (OpenSSL 2048, Java 10,000 and 50,000/100,000 before that, Windows 2000).
pub const MAX_ITERATIONS: u64 = 1_000_000;

/// What we write: go-pkcs12's `Modern` and OpenSSL 3's default.
const ITERATIONS: u32 = 2048;
const SALT_LEN: usize = 16;

/// A decoded file: the private key as PKCS#8 DER (normalized as Go writes it) and the
/// certificates' DER, the leaf first.
#[derive(Debug)]
pub struct Pfx {
    pub key: Vec<u8>,
    pub certs: Vec<Vec<u8>>,
}

type R<T> = Result<T, String>;

// ASN.1 tags.
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const NULL: u8 = 0x05;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const CTX0: u8 = 0xa0;
const CTX1: u8 = 0xa1;
const CTX0_PRIMITIVE: u8 = 0x80;

/// OIDs, DER-encoded whole (tag, length, value).
mod oid {
    pub const DATA: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
    pub const ENCRYPTED_DATA: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x06];
    pub const KEY_BAG: &[u8] = &[0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x01];
    pub const SHROUDED_KEY_BAG: &[u8] = &[0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x02];
    pub const CERT_BAG: &[u8] = &[0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x03];
    pub const X509_CERTIFICATE: &[u8] = &[0x06, 0x0a, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x16, 0x01];
    pub const LOCAL_KEY_ID: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x15];
    pub const PBE_SHA1_3DES: &[u8] = &[0x06, 0x0a, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x03];
    pub const PBE_SHA1_2DES: &[u8] = &[0x06, 0x0a, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x04];
    pub const PBE_SHA1_RC2_128: &[u8] = &[0x06, 0x0a, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x05];
    pub const PBE_SHA1_RC2_40: &[u8] = &[0x06, 0x0a, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x06];
    pub const PBES2: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d];
    pub const PBKDF2: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0c];
    pub const HMAC_SHA1: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x07];
    pub const HMAC_SHA256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x09];
    pub const HMAC_SHA384: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x0a];
    pub const HMAC_SHA512: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x0b];
    pub const AES128_CBC: &[u8] = &[0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02];
    pub const AES192_CBC: &[u8] = &[0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x16];
    pub const AES256_CBC: &[u8] = &[0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];
    pub const DES_EDE3_CBC: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x03, 0x07];
    pub const SHA1: &[u8] = &[0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a];
    pub const SHA256: &[u8] = &[0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
    pub const SHA384: &[u8] = &[0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
    pub const SHA512: &[u8] = &[0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
    pub(in crate::template) use super::super::funcs::{EC_PUBLIC_KEY, ED25519, P256, P384, P521, RSA_ENCRYPTION};
    pub const X25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x6e];
    pub const P224: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x21];
    pub const SUBJECT_KEY_ID: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x0e];
    pub const AUTHORITY_KEY_ID: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x23];
}

/// Whether an OID element's contents are `whole`'s (a constant of [`oid`]).
fn is(whole: &[u8], contents: &[u8]) -> bool {
    whole.get(2..) == Some(contents)
}

/// The dotted form of an OID's contents, for messages (an algorithm's name is no secret).
fn dotted(contents: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for b in contents {
        acc = (acc << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (acc / 40).min(2);
                arcs.push(first);
                arcs.push(acc - first * 40);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        }
    }
    arcs.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

/// The elements of a constructed value's contents, read in order.
struct Items<'a>(&'a [u8]);

impl<'a> Items<'a> {
    /// The whole of `input` is one SEQUENCE: its elements.
    fn sequence(input: &'a [u8]) -> Option<Items<'a>> {
        match der(input)? {
            (SEQUENCE, contents, []) => Some(Items(contents)),
            _ => None,
        }
    }

    /// The next element's contents if it has this tag (nothing is consumed if it has not).
    fn take(&mut self, tag: u8) -> Option<&'a [u8]> {
        let (found, contents, rest) = der(self.0)?;
        (found == tag).then(|| {
            self.0 = rest;
            contents
        })
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn not_pkcs12() -> String {
    "the input is not a DER-encoded PKCS#12 file".to_string()
}

/// A non-negative INTEGER's value.
fn uint(contents: &[u8]) -> Option<u64> {
    let (first, _) = contents.split_first()?;
    if first & 0x80 != 0 {
        return None;
    }
    let magnitude: Vec<u8> = contents.iter().copied().skip_while(|b| *b == 0).collect();
    (magnitude.len() <= 8).then(|| magnitude.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

fn iterations(contents: &[u8]) -> R<u32> {
    match uint(contents) {
        Some(0) | None => Err(not_pkcs12()),
        Some(n) if n > MAX_ITERATIONS => {
            Err(format!("the file asks for {n} key-derivation iterations, above {MAX_ITERATIONS}"))
        }
        Some(n) => u32::try_from(n).map_err(|_| not_pkcs12()),
    }
}

/// The password in both forms PKCS#12 uses: a zero-terminated BMPString (UTF-16BE) for the MAC and
/// the legacy PBEs, UTF-8 for PBES2 (RFC 8018, as OpenSSL, Windows and go-pkcs12 do).
struct Password {
    bmp: Vec<u8>,
    utf8: Vec<u8>,
}

impl Password {
    fn new(password: &str) -> R<Password> {
        let mut bmp = Vec::with_capacity(2 * password.len() + 2);
        for c in password.chars() {
            let unit = u16::try_from(u32::from(c)).map_err(|_| {
                "the password has a character outside Unicode's Basic Multilingual Plane, which PKCS#12 cannot hold"
                    .to_string()
            })?;
            bmp.extend_from_slice(&unit.to_be_bytes());
        }
        bmp.extend_from_slice(&[0, 0]);
        Ok(Password { bmp, utf8: password.as_bytes().to_vec() })
    }
}

/// The PKCS#12 key derivation (RFC 7292 appendix B.2) with hash `D`: `id` 1 for a key, 2 for an IV,
/// 3 for a MAC key.
fn pkcs12_kdf<D: EagerHash>(password: &[u8], salt: &[u8], id: u8, rounds: u32, len: usize) -> Vec<u8> {
    let v = <D as BlockSizeUser>::block_size();
    let fill = |s: &[u8]| -> Vec<u8> { s.iter().copied().cycle().take(v * s.len().div_ceil(v)).collect() };
    let mut i = [fill(salt), fill(password)].concat();
    let diversifier = vec![id; v];
    let mut out = Vec::with_capacity(len + <D as OutputSizeUser>::output_size());
    loop {
        let mut a = D::new().chain_update(&diversifier).chain_update(&i).finalize();
        for _ in 1..rounds {
            a = D::digest(&a);
        }
        out.extend_from_slice(&a);
        if out.len() >= len {
            out.truncate(len);
            return out;
        }
        // I_j = (I_j + B + 1) mod 2^(8v) for each v-byte block, B being A repeated to v bytes.
        let b: Vec<u8> = a.iter().copied().cycle().take(v).collect();
        for block in i.chunks_mut(v) {
            let mut carry = 1u16;
            for (x, y) in block.iter_mut().zip(&b).rev() {
                let sum = u16::from(*x) + u16::from(*y) + carry;
                *x = sum.to_be_bytes()[1];
                carry = sum >> 8;
            }
        }
    }
}

fn hmac<D: EagerHash>(key: &[u8], message: &[u8]) -> Vec<u8>
where
    Hmac<D>: KeyInit + Mac,
{
    // An HMAC takes a key of any length: new_from_slice does not fail.
    match <Hmac<D> as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// The MAC of the authenticated safe with the MAC data's algorithm and a password.
fn mac_of(algorithm: &[u8], salt: &[u8], rounds: u32, password: &[u8], message: &[u8]) -> R<Vec<u8>> {
    fn with<D: EagerHash>(salt: &[u8], rounds: u32, password: &[u8], message: &[u8]) -> Vec<u8>
    where
        Hmac<D>: KeyInit + Mac,
    {
        let key = pkcs12_kdf::<D>(password, salt, 3, rounds, <D as OutputSizeUser>::output_size());
        hmac::<D>(&key, message)
    }
    Ok(if is(oid::SHA1, algorithm) {
        with::<sha1::Sha1>(salt, rounds, password, message)
    } else if is(oid::SHA256, algorithm) {
        with::<sha2::Sha256>(salt, rounds, password, message)
    } else if is(oid::SHA384, algorithm) {
        with::<sha2::Sha384>(salt, rounds, password, message)
    } else if is(oid::SHA512, algorithm) {
        with::<sha2::Sha512>(salt, rounds, password, message)
    } else {
        return Err(format!("the file's MAC algorithm {} is not supported", dotted(algorithm)));
    })
}

/// Checks the MAC (MacData contents) and gives back the password that verified it: as given, or for
/// the empty password no password at all, which some writers use (as go-pkcs12 and OpenSSL try).
fn verify_mac(mac_data: &[u8], message: &[u8], password: &str) -> R<Password> {
    let mut pw = Password::new(password)?;
    let mut items = Items(mac_data);
    let mut digest_info = Items(items.take(SEQUENCE).ok_or_else(not_pkcs12)?);
    let mut algorithm = Items(digest_info.take(SEQUENCE).ok_or_else(not_pkcs12)?);
    let algorithm = algorithm.take(OID).ok_or_else(not_pkcs12)?;
    let expected = digest_info.take(OCTET_STRING).ok_or_else(not_pkcs12)?;
    let salt = items.take(OCTET_STRING).ok_or_else(not_pkcs12)?;
    let rounds = match items.take(INTEGER) {
        Some(n) => iterations(n)?,
        None => 1,
    };
    let matches = |password: &[u8]| -> R<bool> {
        let mac = mac_of(algorithm, salt, rounds, password, message)?;
        Ok(constant_time_eq(&mac, expected))
    };
    if matches(&pw.bmp)? {
        return Ok(pw);
    }
    if password.is_empty() && matches(&[])? {
        pw.bmp = Vec::new();
        return Ok(pw);
    }
    Err("the password is wrong or the file was altered: its MAC does not match".to_string())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Clone, Copy)]
enum Cipher {
    Aes128,
    Aes192,
    Aes256,
    TdesEde3,
    TdesEde2,
    Rc2 { key_len: usize },
}

impl Cipher {
    fn key_len(self) -> usize {
        match self {
            Cipher::Aes128 | Cipher::TdesEde2 => 16,
            Cipher::Aes192 | Cipher::TdesEde3 => 24,
            Cipher::Aes256 => 32,
            Cipher::Rc2 { key_len } => key_len,
        }
    }

    fn iv_len(self) -> usize {
        match self {
            Cipher::Aes128 | Cipher::Aes192 | Cipher::Aes256 => 16,
            Cipher::TdesEde3 | Cipher::TdesEde2 | Cipher::Rc2 { .. } => 8,
        }
    }

    /// CBC decryption with PKCS#7 padding; a bad padding means a wrong key.
    fn decrypt(self, key: &[u8], iv: &[u8], data: &[u8]) -> R<Vec<u8>> {
        use cbc::cipher::block_padding::Pkcs7;
        use cbc::cipher::{BlockModeDecrypt, InnerIvInit, KeyIvInit};
        let out = match self {
            Cipher::Aes128 => {
                cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv).map(|c| c.decrypt_padded_vec::<Pkcs7>(data))
            }
            Cipher::Aes192 => {
                cbc::Decryptor::<aes::Aes192>::new_from_slices(key, iv).map(|c| c.decrypt_padded_vec::<Pkcs7>(data))
            }
            Cipher::Aes256 => {
                cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv).map(|c| c.decrypt_padded_vec::<Pkcs7>(data))
            }
            Cipher::TdesEde3 => {
                cbc::Decryptor::<des::TdesEde3>::new_from_slices(key, iv).map(|c| c.decrypt_padded_vec::<Pkcs7>(data))
            }
            Cipher::TdesEde2 => {
                cbc::Decryptor::<des::TdesEde2>::new_from_slices(key, iv).map(|c| c.decrypt_padded_vec::<Pkcs7>(data))
            }
            Cipher::Rc2 { key_len } => {
                let rc2 = rc2::Rc2::new_with_eff_key_len(key, key_len * 8);
                cbc::Decryptor::<rc2::Rc2>::inner_iv_slice_init(rc2, iv).map(|c| c.decrypt_padded_vec::<Pkcs7>(data))
            }
        };
        match out {
            Ok(Ok(plain)) => Ok(plain),
            Ok(Err(_)) => {
                Err("cannot decrypt a part of the file: the password is wrong or the file is damaged".to_string())
            }
            Err(_) => Err(not_pkcs12()),
        }
    }

    fn encrypt_aes256(key: &[u8], iv: &[u8], data: &[u8]) -> R<Vec<u8>> {
        use cbc::cipher::block_padding::Pkcs7;
        use cbc::cipher::{BlockModeEncrypt, KeyIvInit};
        cbc::Encryptor::<aes::Aes256>::new_from_slices(key, iv)
            .map(|c| c.encrypt_padded_vec::<Pkcs7>(data))
            .map_err(|_| "cannot encrypt: a key or IV of the wrong size".to_string())
    }
}

/// PBKDF2 with the HMAC that `prf` (an AlgorithmIdentifier's OID contents; `None`: the default,
/// HMAC-SHA-1) names.
fn pbkdf2(prf: Option<&[u8]>, password: &[u8], salt: &[u8], rounds: u32, len: usize) -> R<Vec<u8>> {
    let mut out = vec![0; len];
    match prf {
        None => pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt, rounds, &mut out),
        Some(p) if is(oid::HMAC_SHA1, p) => pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt, rounds, &mut out),
        Some(p) if is(oid::HMAC_SHA256, p) => pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, rounds, &mut out),
        Some(p) if is(oid::HMAC_SHA384, p) => pbkdf2::pbkdf2_hmac::<sha2::Sha384>(password, salt, rounds, &mut out),
        Some(p) if is(oid::HMAC_SHA512, p) => pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, salt, rounds, &mut out),
        Some(p) => return Err(format!("the file's PBKDF2 pseudo-random function {} is not supported", dotted(p))),
    }
    Ok(out)
}

/// Decrypts `data` with the password-based scheme of an AlgorithmIdentifier (its contents).
fn decrypt(algorithm: &[u8], data: &[u8], pw: &Password) -> R<Vec<u8>> {
    let mut items = Items(algorithm);
    let scheme = items.take(OID).ok_or_else(not_pkcs12)?;
    if data.is_empty() {
        return Err(not_pkcs12());
    }
    if is(oid::PBES2, scheme) {
        let mut params = Items(items.take(SEQUENCE).ok_or_else(not_pkcs12)?);
        let mut kdf = Items(params.take(SEQUENCE).ok_or_else(not_pkcs12)?);
        let kdf_oid = kdf.take(OID).ok_or_else(not_pkcs12)?;
        if !is(oid::PBKDF2, kdf_oid) {
            return Err(format!("the file's PBES2 key derivation {} is not supported (only PBKDF2)", dotted(kdf_oid)));
        }
        let mut kdf_params = Items(kdf.take(SEQUENCE).ok_or_else(not_pkcs12)?);
        let salt = kdf_params.take(OCTET_STRING).ok_or_else(|| {
            "the file's PBKDF2 salt is not an OCTET STRING (other salt sources are not supported)".to_string()
        })?;
        let rounds = iterations(kdf_params.take(INTEGER).ok_or_else(not_pkcs12)?)?;
        let key_len = kdf_params.take(INTEGER).map(|n| uint(n).ok_or_else(not_pkcs12)).transpose()?;
        let prf = match kdf_params.take(SEQUENCE) {
            Some(prf) => Some(Items(prf).take(OID).ok_or_else(not_pkcs12)?),
            None => None,
        };
        let mut encryption = Items(params.take(SEQUENCE).ok_or_else(not_pkcs12)?);
        let enc_oid = encryption.take(OID).ok_or_else(not_pkcs12)?;
        let cipher = [
            (oid::AES128_CBC, Cipher::Aes128),
            (oid::AES192_CBC, Cipher::Aes192),
            (oid::AES256_CBC, Cipher::Aes256),
            (oid::DES_EDE3_CBC, Cipher::TdesEde3),
        ]
        .into_iter()
        .find(|(o, _)| is(o, enc_oid))
        .map(|(_, c)| c)
        .ok_or_else(|| format!("the file's PBES2 cipher {} is not supported", dotted(enc_oid)))?;
        if key_len.is_some_and(|n| n != cipher.key_len() as u64) {
            return Err(not_pkcs12());
        }
        let iv = encryption.take(OCTET_STRING).filter(|iv| iv.len() == cipher.iv_len()).ok_or_else(not_pkcs12)?;
        let key = pbkdf2(prf, &pw.utf8, salt, rounds, cipher.key_len())?;
        return cipher.decrypt(&key, iv, data);
    }
    let cipher = [
        (oid::PBE_SHA1_3DES, Cipher::TdesEde3),
        (oid::PBE_SHA1_2DES, Cipher::TdesEde2),
        (oid::PBE_SHA1_RC2_128, Cipher::Rc2 { key_len: 16 }),
        (oid::PBE_SHA1_RC2_40, Cipher::Rc2 { key_len: 5 }),
    ]
    .into_iter()
    .find(|(o, _)| is(o, scheme))
    .map(|(_, c)| c)
    .ok_or_else(|| format!("the file's encryption {} is not supported", dotted(scheme)))?;
    let mut params = Items(items.take(SEQUENCE).ok_or_else(not_pkcs12)?);
    let salt = params.take(OCTET_STRING).ok_or_else(not_pkcs12)?;
    let rounds = iterations(params.take(INTEGER).ok_or_else(not_pkcs12)?)?;
    let key = pkcs12_kdf::<sha1::Sha1>(&pw.bmp, salt, 1, rounds, cipher.key_len());
    let iv = pkcs12_kdf::<sha1::Sha1>(&pw.bmp, salt, 2, rounds, cipher.iv_len());
    cipher.decrypt(&key, &iv, data)
}

/// An EncryptedPrivateKeyInfo (a shrouded key bag's value, whole) decrypted: PKCS#8 DER.
fn decrypt_key_info(epki: &[u8], pw: &Password) -> R<Vec<u8>> {
    let mut items = Items::sequence(epki).ok_or_else(not_pkcs12)?;
    let algorithm = items.take(SEQUENCE).ok_or_else(not_pkcs12)?;
    let data = items.take(OCTET_STRING).ok_or_else(not_pkcs12)?;
    decrypt(algorithm, data, pw)
}

/// Reads a PKCS#12 file as go-pkcs12's `DecodeChain` does (see the module doc).
pub fn decode(input: &[u8], password: &str) -> R<Pfx> {
    let mut pfx = Items::sequence(input).ok_or_else(not_pkcs12)?;
    let version = pfx.take(INTEGER).ok_or_else(not_pkcs12)?;
    if version != [3] {
        return Err("the file is not a version 3 PKCS#12 file".to_string());
    }
    let mut auth = Items(pfx.take(SEQUENCE).ok_or_else(not_pkcs12)?);
    if !is(oid::DATA, auth.take(OID).ok_or_else(not_pkcs12)?) {
        return Err(
            "the file is signed (public-key integrity), which is not supported; only password integrity is".to_string()
        );
    }
    let auth_safe = Items(auth.take(CTX0).ok_or_else(not_pkcs12)?).take(OCTET_STRING).ok_or_else(not_pkcs12)?;
    let pw = match pfx.take(SEQUENCE) {
        Some(mac_data) => verify_mac(mac_data, auth_safe, password)?,
        None if password.is_empty() => Password::new("")?,
        None => return Err("the file has no MAC, so no password: call the function without one".to_string()),
    };

    let mut key = None;
    let mut certs = Vec::new();
    let mut parts = Items::sequence(auth_safe).ok_or_else(not_pkcs12)?;
    if parts.is_empty() {
        return Err(not_pkcs12());
    }
    while !parts.is_empty() {
        let mut info = Items(parts.take(SEQUENCE).ok_or_else(not_pkcs12)?);
        let kind = info.take(OID).ok_or_else(not_pkcs12)?;
        let mut content = Items(info.take(CTX0).ok_or_else(not_pkcs12)?);
        let safe_contents = if is(oid::DATA, kind) {
            content.take(OCTET_STRING).ok_or_else(not_pkcs12)?.to_vec()
        } else if is(oid::ENCRYPTED_DATA, kind) {
            let mut encrypted = Items(content.take(SEQUENCE).ok_or_else(not_pkcs12)?);
            if encrypted.take(INTEGER).ok_or_else(not_pkcs12)? != [0] {
                return Err("the file has an encrypted part of a version other than 0".to_string());
            }
            let mut info = Items(encrypted.take(SEQUENCE).ok_or_else(not_pkcs12)?);
            info.take(OID).ok_or_else(not_pkcs12)?;
            let algorithm = info.take(SEQUENCE).ok_or_else(not_pkcs12)?;
            let data = info.take(CTX0_PRIMITIVE).unwrap_or_default();
            decrypt(algorithm, data, &pw)?
        } else {
            return Err("the file has a part that is neither data nor password-encrypted data".to_string());
        };
        let mut bags = Items::sequence(&safe_contents).ok_or_else(not_pkcs12)?;
        while !bags.is_empty() {
            let mut bag = Items(bags.take(SEQUENCE).ok_or_else(not_pkcs12)?);
            let bag_id = bag.take(OID).ok_or_else(not_pkcs12)?;
            let value = bag.take(CTX0).ok_or_else(not_pkcs12)?;
            if is(oid::CERT_BAG, bag_id) {
                let mut cert_bag = Items::sequence(value).ok_or_else(not_pkcs12)?;
                if !is(oid::X509_CERTIFICATE, cert_bag.take(OID).ok_or_else(not_pkcs12)?) {
                    return Err("the file has a certificate that is not X.509".to_string());
                }
                let cert =
                    Items(cert_bag.take(CTX0).ok_or_else(not_pkcs12)?).take(OCTET_STRING).ok_or_else(not_pkcs12)?;
                if !is_certificate(cert) {
                    return Err("a certificate bag of the file does not hold one X.509 certificate".to_string());
                }
                certs.push(cert.to_vec());
            } else if is(oid::KEY_BAG, bag_id) || is(oid::SHROUDED_KEY_BAG, bag_id) {
                if key.is_some() {
                    return Err("the file holds more than one private key".to_string());
                }
                key = Some(if is(oid::KEY_BAG, bag_id) { value.to_vec() } else { decrypt_key_info(value, &pw)? });
            }
        }
    }
    if certs.is_empty() {
        return Err("the file holds no certificate".to_string());
    }
    let key = key.ok_or_else(|| "the file holds no private key".to_string())?;
    Ok(Pfx { key: normalize_pkcs8(&key, certs.first().map(Vec::as_slice))?, certs })
}

/// Whether `der` is exactly one X.509 certificate (its structure; the signature is not checked).
pub fn is_certificate(der: &[u8]) -> bool {
    let Some(mut cert) = Items::sequence(der) else { return false };
    super::funcs::cert_fields(der).is_some()
        && cert.take(SEQUENCE).is_some()
        && cert.take(SEQUENCE).is_some()
        && cert.take(BIT_STRING).is_some()
        && cert.is_empty()
}

/// A private key (PKCS#1 RSA, PKCS#8, or SEC 1 EC DER, as Go's `parsePrivateKey` of External
/// Secrets tries them) as PKCS#8 DER, as Go's `x509.MarshalPKCS8PrivateKey` writes it; `leaf` as
/// in [`normalize_pkcs8`].
pub fn private_key_pkcs8(der: &[u8], leaf: &[u8]) -> R<Vec<u8>> {
    let unsupported = || "the key is not a PKCS#1, PKCS#8 or SEC 1 private key".to_string();
    let mut items = Items::sequence(der).ok_or_else(unsupported)?;
    items.take(INTEGER).ok_or_else(unsupported)?;
    match der_tag(items.0) {
        // PKCS#1: version, modulus, ...
        Some(INTEGER) => {
            normalize_pkcs8(&der_seq(&[der_uint(&[0]), rsa_algorithm(), der_tlv(OCTET_STRING, der)]), None)
        }
        Some(SEQUENCE) => normalize_pkcs8(der, Some(leaf)),
        // SEC 1: version 1, the private key, [0] the curve.
        Some(OCTET_STRING) => {
            items.take(OCTET_STRING);
            let curve = items.take(CTX0).ok_or_else(|| "the EC private key does not name its curve".to_string())?;
            let curve_oid = Items(curve).take(OID).ok_or_else(unsupported)?;
            let algorithm = der_seq(&[oid::EC_PUBLIC_KEY.to_vec(), der_tlv(OID, curve_oid)]);
            normalize_pkcs8(&der_seq(&[der_uint(&[0]), algorithm, der_tlv(OCTET_STRING, der)]), Some(leaf))
        }
        _ => Err(unsupported()),
    }
}

fn der_tag(input: &[u8]) -> Option<u8> {
    der(input).map(|(tag, _, _)| tag)
}

fn rsa_algorithm() -> Vec<u8> {
    der_seq(&[oid::RSA_ENCRYPTION.to_vec(), vec![NULL, 0]])
}

/// A PKCS#8 PrivateKeyInfo rewritten as Go writes one it parsed: version 0, no attributes or public
/// key, RSA's parameters NULL, an EC key's private scalar padded to the curve's size, without the
/// curve inside (it is in the algorithm) and with its public point. Key types Go does not parse are
/// refused. Go computes an EC key's public point when the key lacks it (Java writes keys so);
/// without curve arithmetic here it is taken from the `leaf` certificate's key when that is on the
/// same curve (the certificate of the key, in any file or input that makes sense), else left out.
fn normalize_pkcs8(pkcs8: &[u8], leaf: Option<&[u8]>) -> R<Vec<u8>> {
    let bad = || "the private key is not a valid PKCS#8 key".to_string();
    let mut items = Items::sequence(pkcs8).ok_or_else(bad)?;
    items.take(INTEGER).ok_or_else(bad)?;
    let mut algorithm = Items(items.take(SEQUENCE).ok_or_else(bad)?);
    let key_oid = algorithm.take(OID).ok_or_else(bad)?;
    let private = items.take(OCTET_STRING).ok_or_else(bad)?;
    let v0 = der_uint(&[0]);
    if is(oid::RSA_ENCRYPTION, key_oid) {
        let mut rsa = Items::sequence(private).ok_or_else(bad)?;
        for _ in 0..9 {
            rsa.take(INTEGER).ok_or_else(bad)?;
        }
        return Ok(der_seq(&[v0, rsa_algorithm(), der_tlv(OCTET_STRING, private)]));
    }
    if is(oid::EC_PUBLIC_KEY, key_oid) {
        let curve = algorithm.take(OID).ok_or_else(|| "the EC private key does not name its curve".to_string())?;
        let size = [(oid::P224, 28), (oid::P256, 32), (oid::P384, 48), (oid::P521, 66)]
            .into_iter()
            .find(|(o, _)| is(o, curve))
            .map(|(_, n)| n)
            .ok_or_else(|| {
                format!("the EC private key's curve {} is not P-224, P-256, P-384 or P-521", dotted(curve))
            })?;
        let mut ec = Items::sequence(private).ok_or_else(bad)?;
        if ec.take(INTEGER).ok_or_else(bad)? != [1] {
            return Err(bad());
        }
        let scalar: Vec<u8> = ec.take(OCTET_STRING).ok_or_else(bad)?.iter().copied().skip_while(|b| *b == 0).collect();
        if scalar.len() > size {
            return Err(bad());
        }
        let padded = [vec![0; size - scalar.len()], scalar].concat();
        ec.take(CTX0);
        let mut inner = vec![der_uint(&[1]), der_tlv(OCTET_STRING, &padded)];
        let algorithm = der_seq(&[oid::EC_PUBLIC_KEY.to_vec(), der_tlv(OID, curve)]);
        let public = match ec.take(CTX1) {
            Some(public) => Some(public.to_vec()),
            None => leaf.and_then(|cert| ec_public_key(cert, &algorithm)),
        };
        if let Some(public) = public {
            inner.push(der_tlv(CTX1, &public));
        }
        return Ok(der_seq(&[v0, algorithm, der_tlv(OCTET_STRING, &der_seq(&inner))]));
    }
    if is(oid::ED25519, key_oid) || is(oid::X25519, key_oid) {
        let seed = match der(private) {
            Some((OCTET_STRING, seed, [])) if seed.len() == 32 && algorithm.is_empty() => seed,
            _ => return Err(bad()),
        };
        let whole_oid = if is(oid::ED25519, key_oid) { oid::ED25519 } else { oid::X25519 };
        return Ok(der_seq(&[v0, der_seq(&[whole_oid.to_vec()]), der_tlv(OCTET_STRING, &der_tlv(OCTET_STRING, seed))]));
    }
    Err(format!("the private key's algorithm {} is not RSA, ECDSA, Ed25519 or X25519", dotted(key_oid)))
}

/// The public key (a BIT STRING, whole) of a certificate whose key has this AlgorithmIdentifier.
fn ec_public_key(cert: &[u8], algorithm: &[u8]) -> Option<Vec<u8>> {
    let mut spki = Items(super::funcs::cert_fields(cert)?.public_key);
    let cert_algorithm = spki.take(SEQUENCE)?;
    let point = spki.take(BIT_STRING)?;
    (der_tlv(SEQUENCE, cert_algorithm) == algorithm).then(|| der_tlv(BIT_STRING, point))
}

/// Salts and IVs for [`encode`], derived rather than drawn so that the same inputs give the same
/// file. Each is HMAC-SHA256, keyed with the private key's PKCS#8 DER, of a label naming its use
/// and then the password and every certificate, each length-prefixed: unpredictable to anyone
/// without the key (as a random salt is), distinct for each use and for any change of the inputs,
/// and the same when nothing changed. An IV is only ever reused with the same key on the same
/// plaintext, which gives the same ciphertext and so shows nothing the identical file does not.
struct Salts {
    key: Vec<u8>,
    inputs: Vec<u8>,
}

impl Salts {
    fn new(key: &[u8], password: &str, certs: &[Vec<u8>]) -> Salts {
        let mut inputs = Vec::new();
        for part in std::iter::once(password.as_bytes()).chain(certs.iter().map(Vec::as_slice)) {
            inputs.extend_from_slice(&(part.len() as u64).to_be_bytes());
            inputs.extend_from_slice(part);
        }
        Salts { key: key.to_vec(), inputs }
    }

    fn get(&self, label: &str, len: usize) -> Vec<u8> {
        let message = [b"lockstep pkcs12 v1 ", label.as_bytes(), b"\0", &self.inputs].concat();
        let mut out = hmac::<sha2::Sha256>(&self.key, &message);
        out.truncate(len);
        out
    }
}

/// PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) encryption of `data`: (AlgorithmIdentifier, ciphertext).
fn pbes2_encrypt(data: &[u8], pw: &Password, salt: &[u8], iv: &[u8]) -> R<(Vec<u8>, Vec<u8>)> {
    let key = pbkdf2(Some(&oid::HMAC_SHA256[2..]), &pw.utf8, salt, ITERATIONS, 32)?;
    let encrypted = Cipher::encrypt_aes256(&key, iv, data)?;
    let iterations = der_uint(&ITERATIONS.to_be_bytes());
    let prf = der_seq(&[oid::HMAC_SHA256.to_vec(), vec![NULL, 0]]);
    let kdf = der_seq(&[oid::PBKDF2.to_vec(), der_seq(&[der_tlv(OCTET_STRING, salt), iterations, prf])]);
    let scheme = der_seq(&[oid::AES256_CBC.to_vec(), der_tlv(OCTET_STRING, iv)]);
    Ok((der_seq(&[oid::PBES2.to_vec(), der_seq(&[kdf, scheme])]), encrypted))
}

fn safe_bag(bag_id: &[u8], value: &[u8], attributes: &[Vec<u8>]) -> Vec<u8> {
    let mut parts = vec![bag_id.to_vec(), der_tlv(CTX0, value)];
    if !attributes.is_empty() {
        parts.push(der_tlv(SET, &attributes.concat()));
    }
    der_seq(&parts)
}

/// A PKCS#12 file of a PKCS#8 key and certificates (the leaf first) as go-pkcs12's `Modern`
/// encoder writes it, with [`Salts`] for its random parts.
pub fn encode(key: &[u8], certs: &[Vec<u8>], password: &str) -> R<Vec<u8>> {
    let pw = Password::new(password)?;
    let leaf = certs.first().ok_or_else(|| "there is no certificate".to_string())?;
    let salts = Salts::new(key, password, certs);
    let local_key_id =
        der_seq(&[oid::LOCAL_KEY_ID.to_vec(), der_tlv(SET, &der_tlv(OCTET_STRING, &sha1::Sha1::digest(leaf)))]);

    let cert_bags: Vec<u8> = certs
        .iter()
        .enumerate()
        .flat_map(|(i, cert)| {
            let value = der_seq(&[oid::X509_CERTIFICATE.to_vec(), der_tlv(CTX0, &der_tlv(OCTET_STRING, cert))]);
            let attributes = if i == 0 { vec![local_key_id.clone()] } else { Vec::new() };
            safe_bag(oid::CERT_BAG, &value, &attributes)
        })
        .collect();
    let (algorithm, encrypted) = pbes2_encrypt(
        &der_tlv(SEQUENCE, &cert_bags),
        &pw,
        &salts.get("cert salt", SALT_LEN),
        &salts.get("cert iv", 16),
    )?;
    let encrypted_info = der_seq(&[oid::DATA.to_vec(), algorithm, der_tlv(CTX0_PRIMITIVE, &encrypted)]);
    let certs_part =
        der_seq(&[oid::ENCRYPTED_DATA.to_vec(), der_tlv(CTX0, &der_seq(&[der_uint(&[0]), encrypted_info]))]);

    let (algorithm, encrypted) = pbes2_encrypt(key, &pw, &salts.get("key salt", SALT_LEN), &salts.get("key iv", 16))?;
    let key_info = der_seq(&[algorithm, der_tlv(OCTET_STRING, &encrypted)]);
    let key_bags = der_seq(&[safe_bag(oid::SHROUDED_KEY_BAG, &key_info, &[local_key_id])]);
    let key_part = der_seq(&[oid::DATA.to_vec(), der_tlv(CTX0, &der_tlv(OCTET_STRING, &key_bags))]);

    let auth_safe = der_seq(&[certs_part, key_part]);
    let mac_salt = salts.get("mac salt", SALT_LEN);
    let mac = mac_of(&oid::SHA256[2..], &mac_salt, ITERATIONS, &pw.bmp, &auth_safe)?;
    let mac_data = der_seq(&[
        der_seq(&[der_seq(&[oid::SHA256.to_vec(), vec![NULL, 0]]), der_tlv(OCTET_STRING, &mac)]),
        der_tlv(OCTET_STRING, &mac_salt),
        der_uint(&ITERATIONS.to_be_bytes()),
    ]);
    Ok(der_seq(&[
        der_uint(&[3]),
        der_seq(&[oid::DATA.to_vec(), der_tlv(CTX0, &der_tlv(OCTET_STRING, &auth_safe))]),
        mac_data,
    ]))
}

/// A certificate's subjectKeyIdentifier and authorityKeyIdentifier's keyIdentifier, each empty
/// when absent (as Go's `x509.Certificate` holds them).
fn key_ids(cert: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let fields = super::funcs::cert_fields(cert)?;
    let mut ski = Vec::new();
    let mut aki = Vec::new();
    for (ext_oid, value) in fields.extensions {
        if is(oid::SUBJECT_KEY_ID, ext_oid) {
            ski = match der(value)? {
                (OCTET_STRING, id, _) => id.to_vec(),
                _ => return None,
            };
        } else if is(oid::AUTHORITY_KEY_ID, ext_oid) {
            let mut items = Items::sequence(value)?;
            aki = items.take(CTX0_PRIMITIVE).unwrap_or_default().to_vec();
        }
    }
    Some((ski, aki))
}

/// The order External Secrets' `fetchCertChains` puts certificates in: each one's parent is the
/// first other certificate whose subjectKeyIdentifier is its authorityKeyIdentifier, and the chain
/// runs from the one certificate that is no one's parent up through the parents. `None` (External
/// Secrets then keeps the order as it was) for two or no such certificates, a cycle, or a
/// certificate it cannot read.
pub fn eso_chain_order(certs: &[Vec<u8>]) -> Option<Vec<usize>> {
    let ids: Vec<(Vec<u8>, Vec<u8>)> = certs.iter().map(|c| key_ids(c)).collect::<Option<_>>()?;
    let n = ids.len();
    let mut parent = vec![None; n];
    let mut is_parent = vec![false; n];
    for (i, (_, aki)) in ids.iter().enumerate() {
        if let Some(j) = (0..n).find(|j| *j != i && ids[*j].0 == *aki) {
            is_parent[j] = true;
            parent[i] = Some(j);
        }
    }
    let mut leaves = (0..n).filter(|i| !is_parent[*i]);
    let leaf = leaves.next()?;
    if leaves.next().is_some() {
        return None;
    }
    let mut order = Vec::new();
    let mut at = Some(leaf);
    while let Some(i) = at {
        if order.len() == n {
            return None;
        }
        order.push(i);
        at = parent[i];
    }
    Some(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASS: &str = "p12-test-pass";
    const LEGACY_PASS: &str = "pässwörd-legacy";

    fn pem_der(pem: &str) -> Vec<Vec<u8>> {
        super::super::funcs::pem_blocks(pem)
            .into_iter()
            .filter_map(|(_, block)| super::super::funcs::pem_body(block))
            .collect()
    }

    #[test]
    fn the_pkcs12_kdf_gives_rfc_7292s_values() {
        // Known answers (OpenSSL's test vectors for PKCS12_key_gen): password "smeg", salt
        // 0a58cf64530d823f, 1 iteration, SHA-1.
        let pw = Password::new("smeg").map(|p| p.bmp).unwrap_or_default();
        let salt = [0x0a, 0x58, 0xcf, 0x64, 0x53, 0x0d, 0x82, 0x3f];
        assert_eq!(
            hex::encode(pkcs12_kdf::<sha1::Sha1>(&pw, &salt, 1, 1, 24)),
            "8aaae6297b6cb04642ab5b077851284eb7128f1a2a7fbca3"
        );
        assert_eq!(hex::encode(pkcs12_kdf::<sha1::Sha1>(&pw, &salt, 2, 1, 8)), "79993dfe048d3b76");
    }

    #[test]
    fn encrypted_private_keys_of_every_cipher_decrypt() {
        let want = pem_der(include_str!("testdata/p12-key.pem")).remove(0);
        let pw = Password::new(PASS).unwrap_or_else(|e| panic!("{e}"));
        for (name, der) in [
            ("PBES2 PBKDF2-HMAC-SHA1 AES-192-CBC", &include_bytes!("testdata/p12-key-pbes2-sha1-aes192.p8.der")[..]),
            ("PBES2 3DES-CBC", &include_bytes!("testdata/p12-key-pbes2-des3.p8.der")[..]),
            ("pbeWithSHAAnd128BitRC2-CBC", &include_bytes!("testdata/p12-key-rc2-128.p8.der")[..]),
            ("pbeWithSHAAnd2-KeyTripleDES-CBC", &include_bytes!("testdata/p12-key-2des.p8.der")[..]),
        ] {
            match decrypt_key_info(der, &pw) {
                Ok(key) => assert_eq!(normalize_pkcs8(&key, None).ok(), Some(want.clone()), "{name}"),
                Err(e) => panic!("{name}: {e}"),
            }
            let wrong = Password::new("wrong").unwrap_or_else(|e| panic!("{e}"));
            // A wrong key almost always breaks the padding; when it does not, the PKCS#8 is garbage.
            let got = decrypt_key_info(der, &wrong).ok().and_then(|k| normalize_pkcs8(&k, None).ok());
            assert_eq!(got, None, "{name} with a wrong password");
        }
    }

    #[test]
    fn files_decode_to_their_key_and_certificates() {
        let key = pem_der(include_str!("testdata/p12-key.pem")).remove(0);
        let leaf = pem_der(include_str!("testdata/p12-leaf.pem")).remove(0);
        let int = pem_der(include_str!("testdata/p12-int.pem")).remove(0);
        let root = pem_der(include_str!("testdata/p12-root.pem")).remove(0);
        // OpenSSL wrote the chain as it was given: root, then intermediate.
        let as_written = vec![leaf.clone(), root.clone(), int.clone()];
        for (name, file, password) in [
            ("pbes2", &include_bytes!("testdata/p12-pbes2.p12")[..], PASS),
            ("legacy", &include_bytes!("testdata/p12-legacy.p12")[..], LEGACY_PASS),
            ("empty", &include_bytes!("testdata/p12-empty.p12")[..], ""),
            ("plain", &include_bytes!("testdata/p12-plain.p12")[..], ""),
        ] {
            match decode(file, password) {
                Ok(pfx) => {
                    assert_eq!(pfx.key, key, "{name}");
                    assert_eq!(pfx.certs, as_written, "{name}");
                    assert_eq!(eso_chain_order(&pfx.certs), Some(vec![0, 2, 1]), "{name}");
                }
                Err(e) => panic!("{name}: {e}"),
            }
        }
        let ec = decode(include_bytes!("testdata/p12-ec.p12"), PASS).unwrap_or_else(|e| panic!("ec: {e}"));
        assert_eq!(ec.key, pem_der(include_str!("testdata/p12-ec-key.pem")).remove(0));
        assert_eq!(ec.certs, pem_der(include_str!("testdata/p12-ec-cert.pem")));
    }

    #[test]
    fn bad_passwords_and_files_are_refused_without_showing_them() {
        let pbes2 = &include_bytes!("testdata/p12-pbes2.p12")[..];
        let mut altered = pbes2.to_vec();
        let middle = altered.len() / 2;
        altered[middle] ^= 1;
        let cases: &[(&[u8], &str, &str)] = &[
            (pbes2, "SECRET-wrong", "MAC does not match"),
            (pbes2, "", "MAC does not match"),
            (&altered, PASS, "MAC does not match"),
            (include_bytes!("testdata/p12-plain.p12"), "SECRET", "no MAC"),
            (b"SECRET not a file", PASS, "not a DER-encoded PKCS#12"),
            (&pbes2[..100], PASS, "not a DER-encoded PKCS#12"),
            (pbes2, "SECRET\u{1F600}", "Basic Multilingual Plane"),
        ];
        for (file, password, want) in cases {
            let e = decode(file, password).err().unwrap_or_default();
            assert!(e.contains(want) && !e.contains("SECRET") && !e.contains(PASS), "{want}: {e}");
        }
    }

    #[test]
    fn encoding_is_deterministic_and_reads_back() {
        let key = pem_der(include_str!("testdata/p12-key.pem")).remove(0);
        let chain = pem_der(include_str!("testdata/p12-chain.pem"));
        let a = encode(&key, &chain, PASS).unwrap_or_else(|e| panic!("{e}"));
        let b = encode(&key, &chain, PASS).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a, b, "the same inputs give the same bytes");
        let other = encode(&key, &chain, "another").unwrap_or_default();
        assert_ne!(a, other);
        // The salts differ with the password too, not only the MAC and ciphertexts.
        let salt_at = |f: &[u8]| f.len() - 4 - 16;
        assert_ne!(a[salt_at(&a)..][..16], other[salt_at(&other)..][..16]);
        let pfx = decode(&a, PASS).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((pfx.key, pfx.certs), (key.clone(), chain.clone()));
        let empty = encode(&key, &chain[..1], "").unwrap_or_else(|e| panic!("{e}"));
        let pfx = decode(&empty, "").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((pfx.key, pfx.certs), (key, chain[..1].to_vec()));
        assert!(decode(&a, "wrong").is_err());
    }

    /// A template function by name, on strings (bytes as [`bytes_to_text`] carries them).
    fn call(name: &str, args: &[&str]) -> Result<String, String> {
        use super::super::funcs::FUNCS;
        let f = FUNCS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f).ok_or("no such function")?;
        let args: Vec<gtmpl_ng::Value> = args.iter().map(|a| gtmpl_ng::Value::from(*a)).collect();
        match f(&args).map_err(|e| e.to_string())? {
            gtmpl_ng::Value::String(s) => Ok(s),
            other => Err(format!("{name} gave {other:?}")),
        }
    }

    fn ok(name: &str, args: &[&str]) -> String {
        call(name, args).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn file(bytes: &[u8]) -> String {
        super::super::funcs::bytes_to_text(bytes)
    }

    /// A base64 file as the template string `b64dec` makes of it.
    fn unbase64(b64: &str) -> String {
        ok("b64dec", &[b64])
    }

    const KEY: &str = include_str!("testdata/p12-key.pem");
    const CHAIN: &str = include_str!("testdata/p12-chain.pem");
    const LEAF: &str = include_str!("testdata/p12-leaf.pem");
    const EC_KEY: &str = include_str!("testdata/p12-ec-key.pem");
    const EC_CERT: &str = include_str!("testdata/p12-ec-cert.pem");

    #[test]
    fn the_decode_functions_give_the_pem_of_each_fixture() {
        let pbes2 = file(include_bytes!("testdata/p12-pbes2.p12"));
        let legacy = file(include_bytes!("testdata/p12-legacy.p12"));
        let empty = file(include_bytes!("testdata/p12-empty.p12"));
        let plain = file(include_bytes!("testdata/p12-plain.p12"));
        let ec = file(include_bytes!("testdata/p12-ec.p12"));
        let java = file(include_bytes!("testdata/p12-java.p12"));
        let java_legacy = file(include_bytes!("testdata/p12-java-legacy.p12"));
        let cases: &[(&str, Vec<&str>, &str)] = &[
            ("pkcs12keyPass", vec![PASS, &pbes2], KEY),
            ("pkcs12certPass", vec![PASS, &pbes2], CHAIN),
            ("pkcs12keyPass", vec![LEGACY_PASS, &legacy], KEY),
            ("pkcs12certPass", vec![LEGACY_PASS, &legacy], CHAIN),
            ("pkcs12key", vec![&empty], KEY),
            ("pkcs12cert", vec![&empty], CHAIN),
            ("pkcs12keyPass", vec!["", &empty], KEY),
            ("pkcs12certPass", vec!["", &empty], CHAIN),
            ("pkcs12key", vec![&plain], KEY),
            ("pkcs12cert", vec![&plain], CHAIN),
            ("pkcs12keyPass", vec![PASS, &ec], EC_KEY),
            ("pkcs12certPass", vec![PASS, &ec], EC_CERT),
            ("pkcs12keyPass", vec!["changeit", &java], include_str!("testdata/p12-java-key.pem")),
            ("pkcs12certPass", vec!["changeit", &java], include_str!("testdata/p12-java-cert.pem")),
            ("pkcs12keyPass", vec!["changeit", &java_legacy], include_str!("testdata/p12-java-legacy-key.pem")),
            ("pkcs12certPass", vec!["changeit", &java_legacy], include_str!("testdata/p12-java-legacy-cert.pem")),
        ];
        for (name, args, want) in cases {
            assert_eq!(ok(name, args), *want, "{name}");
        }
    }

    #[test]
    fn pem_to_pkcs12_round_trips_and_is_deterministic() {
        let rsa_pkcs1 = include_str!("testdata/p12-key.rsa.pem");
        let ec_sec1 = include_str!("testdata/p12-ec-key.sec1.pem");
        let cases: &[(&str, Vec<&str>, &str, &str, &str)] = &[
            // (function, args, password to read it back, the key and the certificates it holds)
            ("pemToPkcs12", vec![CHAIN, KEY], "", KEY, LEAF),
            ("pemToPkcs12Pass", vec![CHAIN, KEY, PASS], PASS, KEY, LEAF),
            ("fullPemToPkcs12", vec![CHAIN, KEY], "", KEY, CHAIN),
            ("fullPemToPkcs12Pass", vec![CHAIN, KEY, PASS], PASS, KEY, CHAIN),
            ("fullPemToPkcs12Pass", vec![CHAIN, rsa_pkcs1, PASS], PASS, KEY, CHAIN),
            ("pemToPkcs12Pass", vec![EC_CERT, ec_sec1, LEGACY_PASS], LEGACY_PASS, EC_KEY, EC_CERT),
            ("fullPemToPkcs12", vec![EC_CERT, EC_KEY], "", EC_KEY, EC_CERT),
        ];
        for (name, args, password, key, certs) in cases {
            let b64 = ok(name, args);
            assert_eq!(ok(name, args), b64, "{name}: the same inputs give the same file");
            let p12 = unbase64(&b64);
            assert_eq!(ok("pkcs12keyPass", &[password, &p12]), *key, "{name}");
            assert_eq!(ok("pkcs12certPass", &[password, &p12]), *certs, "{name}");
            if password.is_empty() {
                assert_eq!(ok("pkcs12key", &[&p12]), *key, "{name}");
            } else {
                let e = call("pkcs12key", &[&p12]).err().unwrap_or_default();
                assert!(e.starts_with("pkcs12key: ") && e.contains("MAC does not match"), "{name}: {e}");
            }
        }
        assert_ne!(ok("pemToPkcs12Pass", &[CHAIN, KEY, "a"]), ok("pemToPkcs12Pass", &[CHAIN, KEY, "b"]));
    }

    #[test]
    fn the_functions_refuse_bad_input_without_quoting_it() {
        let pbes2 = file(include_bytes!("testdata/p12-pbes2.p12"));
        let secret_pem = "-----BEGIN CERTIFICATE-----\nU0VDUkVU\n-----END CERTIFICATE-----\n";
        let secret_key = "-----BEGIN PRIVATE KEY-----\nU0VDUkVU\n-----END PRIVATE KEY-----\n";
        let chain_and_junk = format!("{CHAIN}{secret_pem}");
        let cases: &[(&str, Vec<&str>, &str)] = &[
            ("pkcs12keyPass", vec!["SECRET-wrong", &pbes2], "pkcs12keyPass: the password is wrong"),
            ("pkcs12certPass", vec!["SECRET-wrong", &pbes2], "pkcs12certPass: the password is wrong"),
            ("pkcs12key", vec![&pbes2], "pkcs12key: the password is wrong"),
            ("pkcs12cert", vec!["SECRET"], "pkcs12cert: the input is not a DER-encoded PKCS#12 file"),
            ("pkcs12key", vec![], "exactly 1"),
            ("pkcs12keyPass", vec![&pbes2], "exactly 2"),
            ("pemToPkcs12", vec!["SECRET", KEY], "pemToPkcs12: the certificate is not PEM"),
            ("pemToPkcs12", vec![secret_pem, KEY], "pemToPkcs12: the certificate is not an X.509 certificate"),
            ("fullPemToPkcs12", vec![&chain_and_junk, KEY], "certificate 3 of the chain is not an X.509"),
            ("pemToPkcs12", vec![CHAIN, "SECRET"], "pemToPkcs12: the private key is not PEM"),
            ("pemToPkcs12Pass", vec![CHAIN, secret_key, PASS], "the key is not a PKCS#1, PKCS#8 or SEC 1"),
            ("pemToPkcs12Pass", vec![CHAIN, KEY, "SECRET\u{1F600}"], "Basic Multilingual Plane"),
            ("fullPemToPkcs12Pass", vec![CHAIN, KEY], "exactly 3"),
        ];
        for (name, args, want) in cases {
            let e = call(name, args).err().unwrap_or_default();
            assert!(
                e.contains(want) && !e.contains("SECRET") && !e.contains("U0VD") && !e.contains(PASS),
                "{name}: {e}"
            );
        }
    }

    /// `openssl pkcs12` reads what we write and gives back the key and certificates; skipped when
    /// there is no openssl.
    #[test]
    fn openssl_reads_what_we_write() {
        let Ok(version) = std::process::Command::new("openssl").arg("version").output() else {
            eprintln!("openssl is not installed: skipped");
            return;
        };
        if !version.status.success() {
            eprintln!("openssl does not run: skipped");
            return;
        }
        let key_pem = include_str!("testdata/p12-key.pem");
        let chain_pem = include_str!("testdata/p12-chain.pem");
        let key = pem_der(key_pem).remove(0);
        let chain = pem_der(chain_pem);
        for password in [PASS, ""] {
            let file = encode(&key, &chain, password).unwrap_or_else(|e| panic!("{e}"));
            let path =
                std::env::temp_dir().join(format!("lockstep-p12-test-{}-{}.p12", std::process::id(), password.len()));
            std::fs::write(&path, &file).unwrap_or_else(|e| panic!("{e}"));
            let out = std::process::Command::new("openssl")
                .args(["pkcs12", "-info", "-nodes", "-passin", &format!("pass:{password}"), "-in"])
                .arg(&path)
                .output()
                .unwrap_or_else(|e| panic!("{e}"));
            let _ = std::fs::remove_file(&path);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "openssl refused it: {stderr}");
            assert!(stderr.contains("MAC: sha256, Iteration 2048"), "{stderr}");
            assert!(stderr.contains("PBES2, PBKDF2, AES-256-CBC, Iteration 2048, PRF hmacWithSHA256"), "{stderr}");
            let blocks = pem_der(&stdout);
            assert!(blocks.contains(&key), "openssl gave back the key");
            for cert in &chain {
                assert!(blocks.contains(cert), "openssl gave back every certificate");
            }
        }
    }
}
