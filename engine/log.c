/*
 * engine/log.c — formats and writes log lines (see log.h).
 */
#include "engine/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048

static enum eng_log_level log_level = ENG_LOG_INFO;
static int log_fd = 2;

static const char *const level_names[] = {
#define ENG_LOG_NAME(name, str) [name] = str,
    ENG_LOG_LEVELS(ENG_LOG_NAME)
#undef ENG_LOG_NAME
};

void eng_log_set_level(enum eng_log_level level)
{
    log_level = level;
}

enum eng_log_level eng_log_get_level(void)
{
    return log_level;
}

void eng_log_set_fd(int fd)
{
    log_fd = fd;
}

int eng_log_get_fd(void)
{
    return log_fd;
}

int eng_log_level_parse(const char *name, enum eng_log_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum eng_log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

void eng_log(enum eng_log_level level, const char *fmt, ...)
{
    if (level > log_level)
        return;

    char line[LOG_LINE_MAX];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_names[level]);

    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);

    size_t len = (size_t)n + (size_t)(m < 0 ? 0 : m);
    if (len >= sizeof(line) - 1) {
        /* Truncated: mark it, so a reader knows the evidence was cut, not missing. */
        len = sizeof(line) - 1;
        memcpy(line + len - 3, "...", 3);
    }
    /* One entry, one line, whatever the values in it: a client's name, an MX's reply or
     * a DNS name with a CR or LF must not forge log lines of its own. */
    for (size_t i = (size_t)n; i < len; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
            line[i] = '?';
    line[len++] = '\n';

    /* One write per line: lines from several threads never interleave. A failed log
     * write has nowhere to be reported; the loop only retries interruptions. */
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(log_fd, line + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
}
