/*
 * engine/capcache_int.h — what the capability cache's file code (capcache_file.c)
 * needs from its core (capcache.c). Private to those two files.
 */
#ifndef FLOORMTA_ENGINE_CAPCACHE_INT_H
#define FLOORMTA_ENGINE_CAPCACHE_INT_H

#include "engine/capcache.h"

/* Normalises an MX host name into out: lowercase, one trailing dot dropped. Returns
 * its length, or -EINVAL (NULL), -ENAMETOOLONG, -EILSEQ (empty, or a byte that is not
 * printable ASCII, or a space). in is borrowed. */
int eng_capcache_norm_host(const char *in, char out[ENG_CAPCACHE_HOST_MAX]);

/* Like eng_capcache_foreach, but least recently used first (the order a file must
 * list entries in so that loading it restores the use order). */
void eng_capcache_foreach_oldest(struct eng_capcache *c, int64_t now, eng_capcache_fn fn,
                                 void *arg);

/* Inserts an entry read from a file, as the most recently used one. e must be valid
 * (normalised host, port > 0, pass iff reason NONE) and live at now; its checked_at is
 * capped at now and its expires_at at now + eng_capcache_ttl_for(reason). Returns 1 if
 * inserted, 0 if the cache already held an entry for host:port checked at the same time
 * or later (kept). */
int eng_capcache_restore(struct eng_capcache *c, const struct eng_capcache_entry *e, int64_t now);

#endif /* FLOORMTA_ENGINE_CAPCACHE_INT_H */
