/*
 * engine/errors.c — routes an error code to its module's *_strerror (see errors.h).
 * The ranges are the ones each module's X-macro list reserves.
 */
#include "engine/errors.h"

#include "dns/dns.h"
#include "engine/loop.h"
#include "engine/smtp_reply.h"
#include "queue/queue.h"
#include "tls/tls.h"

const char *eng_describe_error(int err)
{
    if (err <= -12000 && err > -13000)
        return tls_strerror(err);
    if (err <= -11000 && err > -12000)
        return dns_strerror(err);
    if (err <= -13000 && err > -14000)
        return queue_strerror(err);
    if (err <= -10100 && err > -10200)
        return smtp_strerror(err);
    return eng_strerror(err);
}
