/*
 * engine/hash.h — the one hash of names the engine uses: FNV-1a (64 bits) with ASCII
 * letters lower-cased, so "Example.COM" and "example.com" land together. Stable across
 * runs, builds and machines (shards and egress choices must not move on a restart).
 * Not for hostile keys in a table an attacker can fill: domains and MX names here come
 * from the queue and from DNS answers the engine asked for.
 */
#ifndef FLOORMTA_ENGINE_HASH_H
#define FLOORMTA_ENGINE_HASH_H

#include <stdint.h>

#define ENG_HASH_INIT  0xcbf29ce484222325ull /* FNV-1a 64 offset basis */
#define ENG_HASH_PRIME 0x100000001b3ull      /* FNV 64 prime */

/* Folds v (one value, as a whole) into h. */
static inline uint64_t eng_hash_mix(uint64_t h, uint64_t v)
{
    return (h ^ v) * ENG_HASH_PRIME;
}

/* FNV-1a of name (borrowed, NUL-terminated), ASCII letters lower-cased. */
static inline uint64_t eng_hash_name(const char *name)
{
    uint64_t h = ENG_HASH_INIT;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = eng_hash_mix(h, *p >= 'A' && *p <= 'Z' ? (unsigned)(*p + 32) : *p);
    return h;
}

#endif /* FLOORMTA_ENGINE_HASH_H */
