/*
 * bench/sink_greylist.c — the addresses the tempfail-once-* recipient convention has
 * seen (see sink.h): the first RCPT for an address gets 451, every later one 250, as a
 * greylisting receiver would answer, so a client's retry path can be tested end to end.
 *
 * A fixed table allocated at start: SINK_GREY_SLOTS open-addressing slots (linear
 * probing, never more than half full, nothing is ever removed) holding indices of
 * fixed-size rows with the lowercased address. Lookups hash, probe and compare the
 * whole address, so two addresses are the same only if they are equal ignoring case.
 * Nothing here allocates after sink_greylist_init.
 */
#include "bench/sink.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int sink_greylist_init(struct sink_greylist *g)
{
    memset(g, 0, sizeof(*g));
    /* calloc of this size maps fresh zero pages: only the rows used are ever touched. */
    g->slots = calloc(SINK_GREY_SLOTS, sizeof(*g->slots));
    g->hashes = calloc(SINK_GREY_MAX, sizeof(*g->hashes));
    g->rows = calloc(SINK_GREY_MAX, SINK_GREY_ADDR_MAX);
    if (g->slots == NULL || g->hashes == NULL || g->rows == NULL) {
        sink_greylist_free(g);
        return -ENOMEM;
    }
    return 0;
}

void sink_greylist_free(struct sink_greylist *g)
{
    free(g->slots);
    free(g->hashes);
    free(g->rows);
    memset(g, 0, sizeof(*g));
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

bool sink_greylist_seen(struct sink_greylist *g, const char *addr, size_t len)
{
    if (g->slots == NULL || len >= SINK_GREY_ADDR_MAX)
        return false; /* cannot be remembered: refused every time (documented) */
    char key[SINK_GREY_ADDR_MAX];
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a, over the lowercased bytes */
    for (size_t i = 0; i < len; i++) {
        key[i] = lower(addr[i]);
        h = (h ^ (uint8_t)key[i]) * 0x100000001b3ULL;
    }
    key[len] = '\0';

    uint32_t mask = SINK_GREY_SLOTS - 1;
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        uint32_t slot = g->slots[i];
        if (slot == 0) {
            /* Not seen. Remember it if there is room (the table stays half empty, so
             * this probe always ends at an empty slot). */
            if (g->count < SINK_GREY_MAX) {
                uint32_t row = g->count++;
                g->hashes[row] = h;
                memcpy(g->rows + (size_t)row * SINK_GREY_ADDR_MAX, key, len + 1);
                g->slots[i] = row + 1;
            }
            return false;
        }
        uint32_t row = slot - 1;
        if (g->hashes[row] == h && strcmp(g->rows + (size_t)row * SINK_GREY_ADDR_MAX, key) == 0)
            return true;
    }
}
