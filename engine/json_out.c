/*
 * engine/json_out.c — the JSON writer of json_out.h: appends with escaping, validates
 * UTF-8 on the way, grows its buffer geometrically up to a bound.
 */
#include "engine/json_out.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX (16u << 20)
#define FIRST_CAP   1024u

void eng_json_out_reset(struct eng_json_out *w)
{
    w->len = 0;
    w->failed = false;
    w->depth = 0;
    w->comma[0] = false;
    if (w->buf)
        w->buf[0] = '\0';
}

void eng_json_out_free(struct eng_json_out *w)
{
    free(w->buf);
    w->buf = NULL;
    w->len = w->cap = 0;
    eng_json_out_reset(w);
}

const char *eng_json_out_text(const struct eng_json_out *w)
{
    return w->failed || w->buf == NULL ? NULL : w->buf;
}

/* Room for n more bytes and the NUL. */
static bool reserve(struct eng_json_out *w, size_t n)
{
    if (w->failed)
        return false;
    size_t max = w->max ? w->max : DEFAULT_MAX;
    if (n < w->cap && w->len < w->cap - n)
        return true;
    if (n >= max || w->len >= max - n) {
        w->failed = true;
        return false;
    }
    size_t cap = w->cap ? w->cap : FIRST_CAP;
    while (cap <= w->len + n)
        cap *= 2;
    if (cap > max)
        cap = max;
    char *b = realloc(w->buf, cap);
    if (!b) {
        w->failed = true;
        return false;
    }
    w->buf = b;
    w->cap = cap;
    return true;
}

static void put(struct eng_json_out *w, const char *s, size_t n)
{
    if (!reserve(w, n))
        return;
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

/* The length of the valid UTF-8 sequence at p (1-4), or 0 if it is not one (overlong
 * forms, surrogates and code points past U+10FFFF are not valid: RFC 3629). */
static size_t utf8_len(const unsigned char *p, size_t left)
{
    unsigned c = p[0];
    size_t n;
    unsigned min;
    if (c < 0xc2 || c > 0xf4)
        return 0;
    if (c < 0xe0) {
        n = 2;
        min = 0x80;
    } else if (c < 0xf0) {
        n = 3;
        min = 0x800;
    } else {
        n = 4;
        min = 0x10000;
    }
    if (left < n)
        return 0;
    unsigned cp = c & (0x3fu >> (n - 1));
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

static void put_string(struct eng_json_out *w, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t left = strlen(s);
    put(w, "\"", 1);
    while (left > 0 && !w->failed) {
        /* The run of bytes that need no escaping goes in one copy. */
        size_t run = 0;
        while (run < left && p[run] >= 0x20 && p[run] < 0x80 && p[run] != '"' && p[run] != '\\')
            run++;
        if (run) {
            put(w, (const char *)p, run);
            p += run;
            left -= run;
            continue;
        }
        unsigned c = *p;
        if (c >= 0x80) {
            size_t n = utf8_len(p, left);
            if (n) {
                put(w, (const char *)p, n);
            } else {
                put(w, "\\ufffd", 6);
                n = 1;
            }
            p += n;
            left -= n;
            continue;
        }
        char esc[6] = { '\\', 0 };
        size_t n = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            memcpy(esc, "\\u00", 4);
            put(w, esc, 4);
            esc[0] = hex[c >> 4];
            esc[1] = hex[c & 15];
            break;
        }
        put(w, esc, n);
        p++;
        left--;
    }
    put(w, "\"", 1);
}

/* The separator and key before a value. */
static void lead(struct eng_json_out *w, const char *key)
{
    if (w->comma[w->depth])
        put(w, ",", 1);
    w->comma[w->depth] = true;
    if (key) {
        put_string(w, key);
        put(w, ":", 1);
    }
}

void eng_json_out_open(struct eng_json_out *w, const char *key, bool array)
{
    lead(w, key);
    if (w->depth + 1 >= ENG_JSON_MAX_DEPTH) {
        w->failed = true;
        return;
    }
    put(w, array ? "[" : "{", 1);
    w->comma[++w->depth] = false;
}

void eng_json_out_close(struct eng_json_out *w, bool array)
{
    if (w->depth == 0) {
        w->failed = true;
        return;
    }
    w->depth--;
    put(w, array ? "]" : "}", 1);
}

void eng_json_out_str(struct eng_json_out *w, const char *key, const char *s)
{
    lead(w, key);
    put_string(w, s ? s : "");
}

void eng_json_out_str_or_null(struct eng_json_out *w, const char *key, const char *s)
{
    if (s && s[0])
        eng_json_out_str(w, key, s);
    else
        eng_json_out_null(w, key);
}

void eng_json_out_int(struct eng_json_out *w, const char *key, int64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%lld", (long long)v);
    lead(w, key);
    put(w, num, (size_t)n);
}

void eng_json_out_null(struct eng_json_out *w, const char *key)
{
    lead(w, key);
    put(w, "null", 4);
}
