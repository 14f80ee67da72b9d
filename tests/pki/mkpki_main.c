/*
 * tests/pki/mkpki_main.c — floormta-testpki DIR [MXNAME]: writes the test PKI (see
 * testpki.h) into DIR, creating it if needed, for scripts and integration tests.
 * Silent on success; a message and exit status 1 on failure.
 */
#include "tests/pki/testpki.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s DIR [MXNAME]\n", argv[0]);
        return 1;
    }
    const char *dir = argv[1];
    const char *mx = argc == 3 ? argv[2] : "mx.floormta.test";
    /* Checked before creating anything, so a bad name leaves no empty directory. */
    const char *dot = strchr(mx, '.');
    if (dot == NULL || dot == mx || dot[1] == '\0') {
        fprintf(stderr, "%s: MXNAME must have at least two labels: %s\n", argv[0], mx);
        return 1;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "%s: cannot create %s: %s\n", argv[0], dir, strerror(errno));
        return 1;
    }
    int rc = testpki_generate(dir, mx);
    if (rc < 0) {
        fprintf(stderr, "%s: cannot generate the test PKI in %s for %s: %s\n", argv[0], dir, mx,
                strerror(-rc));
        return 1;
    }
    return 0;
}
