/*
 * engine/log.h — floormta's log lines.
 *
 * One line per event, to stderr (or a file), "2026-11-22T23:55:00.123Z level msg". Every
 * delivery decision is logged with its evidence as key=value pairs, so a line can be
 * grepped and parsed without a schema. Lines are formatted into a bounded stack buffer
 * and written with one write(2), so concurrent threads never interleave within a line.
 */
#ifndef FLOORMTA_ENGINE_LOG_H
#define FLOORMTA_ENGINE_LOG_H

#define ENG_LOG_LEVELS(X)     \
    X(ENG_LOG_ERROR, "error") \
    X(ENG_LOG_WARN, "warn")   \
    X(ENG_LOG_INFO, "info")   \
    X(ENG_LOG_DEBUG, "debug")

enum eng_log_level {
#define ENG_LOG_ENUM(name, str) name,
    ENG_LOG_LEVELS(ENG_LOG_ENUM)
#undef ENG_LOG_ENUM
};

/* Lines above this level are dropped (default ENG_LOG_INFO). */
void eng_log_set_level(enum eng_log_level level);
enum eng_log_level eng_log_get_level(void);

/* Sends lines to fd instead of stderr (2). The fd stays the caller's. */
void eng_log_set_fd(int fd);

/* The fd lines go to. */
int eng_log_get_fd(void);

/* Parses "error", "warn", "info", "debug". Returns 0, or -EINVAL. name is borrowed. */
int eng_log_level_parse(const char *name, enum eng_log_level *out);

/* Writes one line (printf format; a trailing newline is added; longer than 2 KiB is
 * truncated with "..."). */
void eng_log(enum eng_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define eng_log_enabled(level) ((level) <= eng_log_get_level())

#endif /* FLOORMTA_ENGINE_LOG_H */
