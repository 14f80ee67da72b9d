/*
 * engine/dns_loop.h — binds a dns/ resolver to the io_uring loop.
 *
 * c-ares' sockets are watched with one-shot io_uring polls (a handle per socket, re-armed
 * after each event), ares_process_fd runs on readiness, and the resolver's next timeout
 * is one loop timer. c-ares may close a socket while its poll is armed: the watcher's
 * handle is closed at once (cancelling the poll), and a late completion for it is
 * dropped by the loop's generation check, even if c-ares reuses the fd number.
 */
#ifndef FLOORMTA_ENGINE_DNS_LOOP_H
#define FLOORMTA_ENGINE_DNS_LOOP_H

#include "dns/dns.h"
#include "engine/loop.h"

struct eng_dns;

/* Creates a resolver on loop. cfg is borrowed for the call. Returns 0 and *out (free
 * with eng_dns_free before the loop), or what dns_resolver_new / the loop return. */
int eng_dns_new(struct eng_loop *loop, const struct dns_config *cfg, struct eng_dns **out);

/* Frees the resolver (pending callbacks run with TEMPFAIL/SHUTDOWN) and closes its
 * handles; their release happens in the loop's next iteration. NULL is a no-op. */
void eng_dns_free(struct eng_dns *d);

/* The resolver, for dns_mx_cached and dns_resolver_stats. Borrowed. */
struct dns_resolver *eng_dns_resolver(struct eng_dns *d);

/* Looks domain up: from the cache when it can (cb then runs from the loop's next
 * iteration, never from inside this call), else through dns_resolve_mx. cb and arg as
 * for dns_resolve_mx; domain is copied. Returns 0 or what dns_resolve_mx returns. */
int eng_dns_lookup_mx(struct eng_dns *d, const char *domain, dns_mx_cb cb, void *arg);

#endif /* FLOORMTA_ENGINE_DNS_LOOP_H */
