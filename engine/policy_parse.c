/*
 * engine/policy_parse.c — one policy line ("floor=1.3 ca=/x.pem on_refusal=bounce",
 * "opportunistic") into a struct eng_policy_spec (syntax in policy.h).
 *
 * Strict on purpose: a policy line decides whether mail may travel in the clear, so a
 * typo ("oportunistic", "on_refusal=bouce", "floor=1.1") is an error at start, naming
 * the word, never something silently ignored or defaulted.
 */
#include "engine/policy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const mode_names[] = {
#define ENG_POLICY_MODE_NAME(name, str) [name] = str,
    ENG_POLICY_MODES(ENG_POLICY_MODE_NAME)
#undef ENG_POLICY_MODE_NAME
};

const char *eng_policy_mode_name(enum eng_policy_mode mode)
{
    return (unsigned)mode < ENG_POLICY_MODE__COUNT ? mode_names[mode] : "unknown";
}

void eng_policy_spec_init(struct eng_policy_spec *spec)
{
    memset(spec, 0, sizeof(*spec));
    spec->mode = ENG_POLICY_FLOOR;
}

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt,
                                                      ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* What the words of one line said, before they are checked against each other. */
struct seen {
    bool floor, opportunistic, version, ca, on_refusal;
};

/* Handles one word (len bytes at w, no blanks). */
static int parse_word(const char *w, size_t len, struct eng_policy_spec *spec, struct seen *seen,
                      char *err, size_t errlen)
{
    const char *eq = memchr(w, '=', len);
    size_t klen = eq ? (size_t)(eq - w) : len;
    const char *val = eq ? eq + 1 : NULL;
    size_t vlen = eq ? len - klen - 1 : 0;
    int wl = len > 200 ? 200 : (int)len; /* for messages */

#define KEY_IS(k) (klen == sizeof(k) - 1 && memcmp(w, k, klen) == 0)
    if (KEY_IS("floor") || KEY_IS("opportunistic")) {
        bool opp = KEY_IS("opportunistic");
        if (opp && val != NULL)
            return fail(err, errlen, "'%.*s': opportunistic takes no value", wl, w);
        if ((opp && seen->opportunistic) || (!opp && seen->floor))
            return fail(err, errlen, "'%.*s': %s given twice", wl, w,
                        opp ? "opportunistic" : "floor");
        if (opp)
            seen->opportunistic = true;
        else
            seen->floor = true;
        spec->mode = opp ? ENG_POLICY_OPPORTUNISTIC : ENG_POLICY_FLOOR;
        if (val == NULL)
            return 0;
        char v[16];
        uint16_t version = 0;
        if (vlen == 0 || vlen >= sizeof(v))
            return fail(err, errlen, "'%.*s': the floor is 1.2 or 1.3", wl, w);
        memcpy(v, val, vlen);
        v[vlen] = '\0';
        if (tls_version_parse(v, &version) != 0 ||
            (version != TLS_VERSION_1_2 && version != TLS_VERSION_1_3))
            return fail(err, errlen, "'%.*s': the floor is 1.2 or 1.3", wl, w);
        spec->min_version = version;
        seen->version = true;
        return 0;
    }
    if (KEY_IS("ca")) {
        if (seen->ca)
            return fail(err, errlen, "'%.*s': ca given twice", wl, w);
        if (val == NULL || vlen == 0)
            return fail(err, errlen, "'%.*s': ca needs a file (ca=/path/to/roots.pem)", wl, w);
        if (val[0] != '/')
            return fail(err, errlen, "'%.*s': ca needs an absolute path", wl, w);
        if (vlen >= sizeof(spec->ca_file))
            return fail(err, errlen, "ca: path longer than %d bytes", ENG_POLICY_PATH_MAX - 1);
        memcpy(spec->ca_file, val, vlen);
        spec->ca_file[vlen] = '\0';
        seen->ca = true;
        return 0;
    }
    if (KEY_IS("on_refusal")) {
        if (seen->on_refusal)
            return fail(err, errlen, "'%.*s': on_refusal given twice", wl, w);
        if (val != NULL && vlen == 5 && memcmp(val, "defer", 5) == 0)
            spec->bounce_on_refusal = false;
        else if (val != NULL && vlen == 6 && memcmp(val, "bounce", 6) == 0)
            spec->bounce_on_refusal = true;
        else
            return fail(err, errlen, "'%.*s': on_refusal is defer or bounce", wl, w);
        seen->on_refusal = true;
        return 0;
    }
#undef KEY_IS
    int kl = klen > 200 ? 200 : (int)klen;
    return fail(err, errlen,
                "unknown key '%.*s' (known: floor, floor=1.2|1.3, opportunistic, ca=, "
                "on_refusal=)",
                kl, w);
}

int eng_policy_spec_parse(const char *text, struct eng_policy_spec *out, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (text == NULL || out == NULL)
        return fail(err, errlen, "no policy");
    struct eng_policy_spec spec;
    eng_policy_spec_init(&spec);
    struct seen seen = { 0 };
    size_t words = 0;
    const char *p = text;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            break;
        size_t len = strcspn(p, " \t");
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
                return fail(err, errlen, "control character in the policy");
        int rc = parse_word(p, len, &spec, &seen, err, errlen);
        if (rc < 0)
            return rc;
        words++;
        p += len;
    }
    if (words == 0)
        return fail(err, errlen, "empty policy (write 'floor' for the default)");
    if (seen.floor && seen.opportunistic)
        return fail(err, errlen, "'opportunistic' conflicts with 'floor'");
    if (seen.opportunistic && seen.ca)
        return fail(err, errlen,
                    "'ca=' has no effect with 'opportunistic', which refuses no certificate");
    *out = spec;
    return 0;
}
