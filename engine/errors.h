/*
 * engine/errors.h — one description for any code a floormta function returns, whatever
 * the module: -errno, eng_ (loop), smtp_, dns_, tls_, queue_ ranges. Used where errors reach a log
 * line or a user.
 */
#ifndef FLOORMTA_ENGINE_ERRORS_H
#define FLOORMTA_ENGINE_ERRORS_H

/* Static string. */
const char *eng_describe_error(int err);

#endif /* FLOORMTA_ENGINE_ERRORS_H */
