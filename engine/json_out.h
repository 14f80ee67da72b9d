/*
 * engine/json_out.h — a JSON writer into a caller's growable buffer, for the lines the
 * hot path writes (the delivery log: one object per attempt).
 *
 * Why not jansson here: building a tree of json_t and dumping it cost 17% of a delivery
 * worker's CPU (perf, one-domain benchmark: an allocation per value, a hash insert per
 * key, then a second pass to print). This writer appends to one buffer that lives as
 * long as its owner and is reused line after line, so a line costs no allocation once
 * the buffer has grown to fit. Parsing JSON (the HTTP API, the tests) stays with
 * jansson; the tests parse what this writes back with jansson.
 *
 * Strings are escaped per RFC 8259; bytes that are not valid UTF-8 (a receiver's reply
 * text can hold anything) become U+FFFD, so the output is always valid JSON in UTF-8.
 * Not thread-safe; one writer per thread or per owner.
 */
#ifndef FLOORMTA_ENGINE_JSON_OUT_H
#define FLOORMTA_ENGINE_JSON_OUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ENG_JSON_MAX_DEPTH 16

struct eng_json_out {
    char *buf;       /* owned; NUL-terminated after every append */
    size_t len, cap; /* cap: bytes allocated */
    size_t max;      /* the most the buffer may grow to (0 = 16 MiB) */
    bool failed;     /* out of memory or over max: eng_json_out_text returns NULL */
    unsigned depth;
    bool comma[ENG_JSON_MAX_DEPTH]; /* a value was written at this depth: next needs ',' */
};

/* Starts a new document in w, keeping its buffer. A zeroed struct is a valid empty
 * writer. */
void eng_json_out_reset(struct eng_json_out *w);

/* Frees the buffer; w can be reset and used again. */
void eng_json_out_free(struct eng_json_out *w);

/* The document (borrowed until the next call on w), or NULL if writing it failed. */
const char *eng_json_out_text(const struct eng_json_out *w);

/* Structure. key may be NULL inside arrays and at the top; inside an object it names the
 * member (escaped like any string). Nesting deeper than ENG_JSON_MAX_DEPTH fails the
 * document. */
void eng_json_out_open(struct eng_json_out *w, const char *key, bool array);
void eng_json_out_close(struct eng_json_out *w, bool array);

/* Values. s is borrowed for the call; str_or_null writes null for NULL or "". */
void eng_json_out_str(struct eng_json_out *w, const char *key, const char *s);
void eng_json_out_str_or_null(struct eng_json_out *w, const char *key, const char *s);
void eng_json_out_int(struct eng_json_out *w, const char *key, int64_t v);
void eng_json_out_null(struct eng_json_out *w, const char *key);

#endif /* FLOORMTA_ENGINE_JSON_OUT_H */
