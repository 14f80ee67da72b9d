/*
 * engine/config_int.h — private to engine/config*.c: the parse state, the key tables
 * (schema) and the YAML helpers shared by the walker (config_yaml.c), the schema
 * (config_schema.c, config_rules.c) and the public functions (config.c).
 */
#ifndef FLOORMTA_ENGINE_CONFIG_INT_H
#define FLOORMTA_ENGINE_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#include "engine/config.h"

#define CFG_DEFAULT_NAME "<default>"
#define CFG_PATH_MAX     512 /* key paths: "listen.smtp[3].address" */
#define CFG_MAX_SOURCES  64
#define CFG_MAX_LIST     4096 /* servers, listeners, networks, tokens */

/* Where a key was set. */
struct eng_config_mark {
    char *key;
    const char *file; /* cfg->file or CFG_DEFAULT_NAME (static) */
    unsigned line, col;
    bool from_default;
};

struct eng_config_marks {
    struct eng_config_mark *v;
    size_t n, cap;
};

/* One layer (the default, then the file) being walked. */
struct eng_cfg_parse {
    struct eng_config *cfg;
    struct eng_config_errors *errs;
    const char *file; /* the layer's name, for errors and marks */
    bool is_default;
    yaml_document_t *doc;
    unsigned char *seen; /* per node: visited once already (a second visit is an alias) */
    size_t nerrors;      /* errors this parse appended (both layers and the rules) */
};

/* The kinds of value a key takes. */
enum eng_cfg_type {
    CFG_UINT,    /* a decimal number */
    CFG_SIZE,    /* bytes: "50MiB", "10M", "1000" */
    CFG_MS,      /* a duration stored in milliseconds */
    CFG_SECONDS, /* a duration stored in whole seconds */
    CFG_BOOL,
    CFG_STRING, /* owned char *; "" refused */
    CFG_PATH,   /* owned char *; "" = NULL (unset) */
    CFG_SECTION,
    CFG_CUSTOM,
};

struct eng_cfg_key;
typedef void (*eng_cfg_custom_fn)(struct eng_cfg_parse *p, yaml_node_t *n, const char *path,
                                  void *field);

struct eng_cfg_key {
    const char *name;
    enum eng_cfg_type type;
    size_t off;   /* of the field in the struct the table describes */
    size_t width; /* sizeof the field (numbers) */
    uint64_t min, max;
    const struct eng_cfg_key *section; /* CFG_SECTION: its keys, NULL-name terminated */
    eng_cfg_custom_fn custom;
};

/* ---- config_yaml.c: the walker and scalar conversions -------------------------------- */

/* Appends an error about node n (NULL: line 0) at key path. */
void eng_cfg_err(struct eng_cfg_parse *p, const yaml_node_t *n, const char *path, const char *fmt,
                 ...) __attribute__((format(printf, 4, 5)));

/* Records where path was set (node n), replacing an earlier mark of the same key. */
void eng_cfg_mark(struct eng_cfg_parse *p, const char *path, const yaml_node_t *n);

/* Forgets the marks of path's children ("path." and "path[" prefixes): a list replaced. */
void eng_cfg_marks_drop_children(struct eng_config *cfg, const char *path);

/* The mark of key, or NULL. */
const struct eng_config_mark *eng_cfg_mark_find(const struct eng_config *cfg, const char *key);

/* The node at index i of the current document, or NULL (with an error naming path) when
 * it was visited before: an alias, which the configuration does not allow. */
yaml_node_t *eng_cfg_node(struct eng_cfg_parse *p, int i, const char *path);

/* The scalar's text (borrowed from the document), or NULL with an error. */
const char *eng_cfg_scalar(struct eng_cfg_parse *p, yaml_node_t *n, const char *path);

/* An empty plain scalar, "~" or "null": a key written without a value. */
bool eng_cfg_is_null(const yaml_node_t *n);

/* The items of a sequence (a null value is an empty one) into *items / *n (borrowed
 * from the document). Returns false with an error when n is not a sequence or is
 * longer than max. */
bool eng_cfg_sequence(struct eng_cfg_parse *p, yaml_node_t *node, const char *path, size_t max,
                      yaml_node_item_t **items, size_t *n);

/* Walks a mapping node against keys, storing into base. Unknown keys, repeated keys,
 * wrong types and values out of range are errors; every key found is marked. */
void eng_cfg_walk(struct eng_cfg_parse *p, yaml_node_t *node, const char *path,
                  const struct eng_cfg_key *keys, void *base);

/* "a.b" from path "a" and name "b" (or "b" at the top); "a[3]" from path "a" and i 3. */
void eng_cfg_path_key(char *out, const char *path, const char *name);
void eng_cfg_path_index(char *out, const char *path, size_t i);

/* Conversions of one scalar's text; return 0 or -EINVAL (a bad form) / -ERANGE. */
int eng_cfg_parse_uint(const char *s, uint64_t *out);
int eng_cfg_parse_size(const char *s, uint64_t *out);
int eng_cfg_parse_duration_ms(const char *s, uint64_t *out);

/* Parses a layer: the YAML text, then its root mapping against the schema. */
void eng_cfg_parse_layer(struct eng_cfg_parse *p, const char *text, size_t len);

/* ---- config_schema.c / config_rules.c ------------------------------------------------- */

extern const struct eng_cfg_key eng_cfg_schema[];

/* Checks that involve several keys, and fills what follows from them (helo_name). */
void eng_cfg_rules(struct eng_cfg_parse *p);

/* Start-up allocation: aborts on failure (STYLE 7). */
void *eng_cfg_xcalloc(size_t n, size_t size);
void *eng_cfg_xrealloc(void *ptr, size_t n, size_t size);
char *eng_cfg_xstrdup(const char *s);

/* Frees every element of an owned list and the list; sets *v NULL and *n 0. */
void eng_cfg_free_strings(char ***v, size_t *n);

#endif /* FLOORMTA_ENGINE_CONFIG_INT_H */
