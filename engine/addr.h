/*
 * engine/addr.h — socket addresses as operators write them: "192.0.2.1:25",
 * "[2001:db8::1]:25", "192.0.2.1" (default port). Literals only: names go through dns/.
 */
#ifndef FLOORMTA_ENGINE_ADDR_H
#define FLOORMTA_ENGINE_ADDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Parses text (borrowed) into *out / *outlen. default_port is used when text has none.
 * Returns 0, or -EINVAL (not an IP literal, bad or zero port when one is required). */
int eng_addr_parse(const char *text, uint16_t default_port, struct sockaddr_storage *out,
                   socklen_t *outlen);

/* Formats addr as "192.0.2.1:25" / "[2001:db8::1]:25" into out (cap bytes; 56 always
 * suffice). Returns out. */
char *eng_addr_format(const struct sockaddr *addr, char *out, size_t cap);

#endif /* FLOORMTA_ENGINE_ADDR_H */
