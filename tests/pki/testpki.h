/*
 * tests/pki/testpki.h — the test PKI, generated at test time with BoringSSL.
 *
 * testpki_generate(dir, mx_name) writes PEM files into dir (which must exist):
 *   ca.crt ca.key                the trusted test root ("floormta test root")
 *   evil-ca.crt evil-ca.key      a second root nobody trusts
 *   inter.crt inter.key          an intermediate CA under ca
 * and one leaf per receiver profile, <profile>.crt (leaf first, then any intermediate)
 * and <profile>.key:
 *   valid             EC P-256, SAN mx_name, signed by ca, valid from now-1d to now+365d
 *   valid-rsa         RSA 2048, otherwise like valid (TLS 1.2 ECDHE-RSA)
 *   chain             like valid, signed by inter; the file holds leaf + inter
 *   expired           notBefore now-30d, notAfter now-1d
 *   not-yet-valid     notBefore now+30d, notAfter now+60d
 *   wrong-name        SAN other.invalid
 *   self-signed       self-signed leaf for mx_name
 *   untrusted-ca      leaf for mx_name signed by evil-ca
 *   weak-key          RSA 1024
 *   weak-sig          signed with SHA-1 by ca
 *   wildcard          SAN "*.<parent of mx_name>"
 *   partial-wildcard  SAN "<first letter of mx_name>*.<parent of mx_name>"
 * Every leaf is a non-CA certificate with serverAuth EKU; every name is a SAN dNSName.
 */
#ifndef FLOORMTA_TESTPKI_H
#define FLOORMTA_TESTPKI_H

/* Writes the files above. dir and mx_name are borrowed; mx_name must have at least two
 * labels. Returns 0 or a negative errno. Takes about a second (RSA key generation). */
int testpki_generate(const char *dir, const char *mx_name);

/* The profiles above, NULL-terminated, for loops in tests. */
extern const char *const testpki_profiles[];

#endif /* FLOORMTA_TESTPKI_H */
