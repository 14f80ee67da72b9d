/*
 * tests/fuzz/driver.c — runs a fuzz target (tests/fuzz/fuzz.h) without libFuzzer, for
 * `make test`: every seed-corpus file as it is, then --runs inputs made by mutating them
 * with a fixed-seed generator, so that a run is reproducible and a failure stays one.
 *
 *   fuzz_X [--runs N] [--seed S] [--max-len L] [--max-seconds T] [--crash-file F] PATH...
 *
 * PATH: a corpus folder (every regular file in it) or one file; given only files and no
 * --runs, just those inputs run (to replay a crash). Each input is copied into a buffer
 * of exactly its size, so that AddressSanitizer sees a read one byte past the end. On a
 * crash (a signal, or a sanitizer's report) the input is written to the crash file
 * (default fuzz-crash.bin in the current folder) before the process dies.
 *
 * The mutations are libFuzzer's usual ones, simplified: bit flips, byte changes to
 * values parsers care about (NUL, CR, LF, '.', ' ', digits, 0xff), range removal,
 * duplication and insertion, truncation, and splicing two corpus entries.
 */
#define _GNU_SOURCE
#include "tests/fuzz/fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define FUZZ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FUZZ_ASAN 1
#endif
#endif
#ifdef FUZZ_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

#define CORPUS_MAX    4096
#define CORPUS_BYTES  (1u << 20) /* one corpus file, at most */
#define MUTATIONS_MAX 8

__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

struct input {
    uint8_t *data;
    size_t len;
};

static struct input corpus[CORPUS_MAX];
static size_t ncorpus;

/* The input being run, for the crash handlers. */
static const uint8_t *cur_data;
static size_t cur_len;
static const char *crash_path = "fuzz-crash.bin";

static void save_current(void)
{
    int fd = open(crash_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    size_t off = 0;
    while (off < cur_len) {
        ssize_t n = write(fd, cur_data + off, cur_len - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    close(fd);
    static const char msg[] = "fuzz: the failing input is in the crash file\n";
    (void)!write(2, msg, sizeof(msg) - 1);
}

static void on_signal(int sig)
{
    save_current();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* xorshift64*: fixed seed, same sequence everywhere. */
static uint64_t rng_state;
static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}
static size_t below(size_t n)
{
    return n ? (size_t)(rng() % n) : 0;
}

static int add_file(const char *path)
{
    if (ncorpus == CORPUS_MAX)
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    uint8_t *buf = malloc(CORPUS_BYTES);
    ssize_t n = buf ? read(fd, buf, CORPUS_BYTES) : -1;
    int err = n < 0 ? -errno : 0;
    close(fd);
    if (err != 0 || buf == NULL) {
        free(buf);
        return err ? err : -ENOMEM;
    }
    corpus[ncorpus].data = buf;
    corpus[ncorpus].len = (size_t)n;
    ncorpus++;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A folder's files in name order, so that the run does not depend on readdir's. */
static int add_dir(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return -errno;
    char *names[CORPUS_MAX];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < CORPUS_MAX) {
        if (e->d_name[0] == '.')
            continue;
        if (asprintf(&names[n], "%s/%s", path, e->d_name) < 0)
            break;
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof(names[0]), cmp_names);
    int err = 0;
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (err == 0 && stat(names[i], &st) == 0 && S_ISREG(st.st_mode))
            err = add_file(names[i]);
        free(names[i]);
    }
    return err;
}

static const uint8_t interesting[] = { 0,   '\r', '\n', '.', ' ',  ':',  '-',  '0',  '9',
                                       '<', '>',  '=',  '"', '\\', 0x7f, 0x80, 0xff, '\t' };

/* Mutates buf[0, *len) in place (capacity cap). */
static void mutate(uint8_t *buf, size_t *len, size_t cap)
{
    size_t n = *len;
    unsigned k = 1 + (unsigned)below(MUTATIONS_MAX);
    for (unsigned m = 0; m < k; m++) {
        switch (below(9)) {
        case 0: /* flip a bit */
            if (n)
                buf[below(n)] ^= (uint8_t)(1u << below(8));
            break;
        case 1: /* a random byte */
            if (n)
                buf[below(n)] = (uint8_t)rng();
            break;
        case 2: /* a byte parsers care about */
            if (n)
                buf[below(n)] = interesting[below(sizeof(interesting))];
            break;
        case 3: { /* remove a range */
            if (n == 0)
                break;
            size_t at = below(n), cnt = 1 + below(n - at < 64 ? n - at : 64);
            memmove(buf + at, buf + at + cnt, n - at - cnt);
            n -= cnt;
            break;
        }
        case 4: { /* duplicate a range (up to 64 bytes) somewhere */
            uint8_t tmp[64];
            if (n == 0 || n == cap)
                break;
            size_t from = below(n), cnt = 1 + below(n - from < 64 ? n - from : 64);
            if (cnt > cap - n)
                cnt = cap - n;
            memcpy(tmp, buf + from, cnt);
            size_t at = below(n + 1);
            if (at > n)
                break;
            memmove(buf + at + cnt, buf + at, n - at);
            memcpy(buf + at, tmp, cnt);
            n += cnt;
            break;
        }
        case 5: { /* insert random or repeated bytes */
            size_t cnt = 1 + below(below(2) ? 8 : 300);
            if (cnt > cap - n)
                cnt = cap - n;
            size_t at = below(n + 1);
            memmove(buf + at + cnt, buf + at, n - at);
            uint8_t b = below(2) ? (uint8_t)rng() : interesting[below(sizeof(interesting))];
            for (size_t i = 0; i < cnt; i++)
                buf[at + i] = below(4) ? b : (uint8_t)rng();
            n += cnt;
            break;
        }
        case 6: /* truncate */ n = below(n + 1); break;
        case 7: { /* splice: a prefix of this one, a suffix of another corpus entry */
            const struct input *o = &corpus[below(ncorpus)];
            size_t at = below(n + 1), from = below(o->len + 1), cnt = o->len - from;
            if (cnt > cap - at)
                cnt = cap - at;
            memcpy(buf + at, o->data + from, cnt);
            n = at + cnt;
            break;
        }
        default: { /* overwrite with a piece of another corpus entry */
            const struct input *o = &corpus[below(ncorpus)];
            if (n == 0 || o->len == 0)
                break;
            size_t at = below(n), from = below(o->len), cnt = 1 + below(o->len - from);
            if (cnt > n - at)
                cnt = n - at;
            memcpy(buf + at, o->data + from, cnt);
            break;
        }
        }
    }
    *len = n;
}

/* Runs one input from a buffer of exactly its size. */
static void run_one(const uint8_t *data, size_t len)
{
    uint8_t *exact = malloc(len ? len : 1);
    if (exact == NULL) {
        fprintf(stderr, "fuzz: out of memory\n");
        exit(1);
    }
    memcpy(exact, data, len);
    cur_data = exact;
    cur_len = len;
    LLVMFuzzerTestOneInput(exact, len);
    cur_data = NULL;
    cur_len = 0;
    free(exact);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    unsigned long runs = 0, seed = 1, max_len = 4096;
    double max_seconds = 60;
    bool runs_given = false, only_files = true;
    LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--runs") == 0 && v) {
            runs = strtoul(v, NULL, 10);
            runs_given = true;
            i++;
        } else if (strcmp(a, "--seed") == 0 && v) {
            seed = strtoul(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--max-len") == 0 && v) {
            max_len = strtoul(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--max-seconds") == 0 && v) {
            max_seconds = strtod(v, NULL);
            i++;
        } else if (strcmp(a, "--crash-file") == 0 && v) {
            crash_path = v;
            i++;
        } else if (a[0] == '-') {
            fprintf(stderr,
                    "usage: %s [--runs N] [--seed S] [--max-len L] [--max-seconds T] "
                    "[--crash-file F] PATH...\n",
                    argv[0]);
            return 2;
        } else {
            struct stat st;
            int err = stat(a, &st) != 0 ? -errno : S_ISDIR(st.st_mode) ? add_dir(a) : add_file(a);
            if (S_ISDIR(st.st_mode))
                only_files = false;
            if (err != 0) {
                fprintf(stderr, "fuzz: %s: %s\n", a, strerror(-err));
                return 2;
            }
        }
    }
    if (ncorpus == 0) {
        corpus[ncorpus++] = (struct input){ calloc(1, 1), 0 };
        only_files = false;
    }
    if (!runs_given)
        runs = only_files ? 0 : 20000;
    if (max_len < 16)
        max_len = 16;

    int sigs[] = { SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL };
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        signal(sigs[i], on_signal);
#ifdef FUZZ_ASAN
    __sanitizer_set_death_callback(save_current);
#endif

    double t0 = now_s();
    for (size_t i = 0; i < ncorpus; i++)
        run_one(corpus[i].data, corpus[i].len);

    rng_state = seed * 0x9E3779B97F4A7C15ull + 1;
    uint8_t *buf = malloc(max_len);
    if (buf == NULL)
        return 1;
    unsigned long done = 0;
    for (; done < runs; done++) {
        if ((done & 255) == 0 && now_s() - t0 > max_seconds)
            break;
        const struct input *base = &corpus[below(ncorpus)];
        size_t len = base->len < max_len ? base->len : max_len;
        memcpy(buf, base->data, len);
        mutate(buf, &len, max_len);
        run_one(buf, len);
    }
    free(buf);
    for (size_t i = 0; i < ncorpus; i++)
        free(corpus[i].data);
    printf("fuzz: %zu corpus inputs, %lu mutated (seed %lu, max length %lu) in %.1f s: no "
           "failure\n",
           ncorpus, done, seed, max_len, now_s() - t0);
    return 0;
}
