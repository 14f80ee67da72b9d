/*
 * bench/sink_profile.c — the receiver profiles a sink listener can play.
 *
 * Each profile is one way a real receiver can fall short of (or meet) floormta's TLS
 * floor, so that `floormta probe` and the delivery engine can be tested against every
 * verdict. TLS profiles name their certificate by its tests/pki file stem.
 */
#include "bench/sink.h"

#include <stdio.h>
#include <string.h>

#include "tls/tls.h"

#define V10  TLS_VERSION_1_0
#define V11  TLS_VERSION_1_1
#define V12  TLS_VERSION_1_2
#define V13  TLS_VERSION_1_3
#define SMTP SINK_MODE_SMTP
#define YES  SINK_STARTTLS_YES
#define NO   SINK_STARTTLS_NO

static const struct sink_profile profiles[] = {
    /* name, mode, STARTTLS, certificate, TLS min, TLS max */
    { "none", SMTP, NO, NULL, 0, 0 },
    /* Versions: a valid certificate, only the protocol is below (or at) the floor. */
    { "tls1.0-only", SMTP, YES, "valid", V10, V10 },
    { "tls1.1-only", SMTP, YES, "valid", V11, V11 },
    { "tls1.2", SMTP, YES, "valid", V12, V12 },
    { "tls1.3", SMTP, YES, "valid", V13, V13 },
    /* Certificates: one per leaf of tests/pki, TLS 1.2..1.3. */
    { "valid", SMTP, YES, "valid", V12, V13 },
    { "valid-rsa", SMTP, YES, "valid-rsa", V12, V13 },
    { "chain", SMTP, YES, "chain", V12, V13 },
    { "self-signed", SMTP, YES, "self-signed", V12, V13 },
    { "expired", SMTP, YES, "expired", V12, V13 },
    { "not-yet-valid", SMTP, YES, "not-yet-valid", V12, V13 },
    { "wrong-name", SMTP, YES, "wrong-name", V12, V13 },
    { "untrusted-ca", SMTP, YES, "untrusted-ca", V12, V13 },
    { "weak-key", SMTP, YES, "weak-key", V12, V13 },
    { "weak-sig", SMTP, YES, "weak-sig", V12, V13 },
    { "wildcard", SMTP, YES, "wildcard", V12, V13 },
    { "partial-wildcard", SMTP, YES, "partial-wildcard", V12, V13 },
    /* Misbehaving receivers. */
    { "starttls-454", SMTP, SINK_STARTTLS_454, NULL, 0, 0 },
    { "stall", SINK_MODE_STALL, NO, NULL, 0, 0 },
    { "flood", SINK_MODE_FLOOD, NO, NULL, 0, 0 },
    { "trickle", SINK_MODE_TRICKLE, NO, NULL, 0, 0 },
    { "drop-data", SINK_MODE_DROP_DATA, YES, "valid", V12, V13 },
};
#define PROFILE_COUNT (sizeof(profiles) / sizeof(profiles[0]))

const struct sink_profile *sink_profile_find(const char *name)
{
    for (size_t i = 0; i < PROFILE_COUNT; i++)
        if (strcmp(profiles[i].name, name) == 0)
            return &profiles[i];
    return NULL;
}

const char *sink_profile_names(void)
{
    static char names[512];
    if (names[0] == '\0') {
        size_t n = 0;
        for (size_t i = 0; i < PROFILE_COUNT && n < sizeof(names); i++)
            n += (size_t)snprintf(names + n, sizeof(names) - n, "%s%s", i ? " " : "",
                                  profiles[i].name);
    }
    return names;
}
