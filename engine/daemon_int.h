/*
 * engine/daemon_int.h — private to engine/daemon*.c: the running daemon's objects, and
 * the services it puts on the worker group (the SMTP submission listeners on every
 * worker, the HTTP API on the first).
 *
 * Ownership: everything here is built by eng_cmd_run (daemon.c) before the group
 * starts and freed after it stopped; the services only borrow it.
 */
#ifndef FLOORMTA_ENGINE_DAEMON_INT_H
#define FLOORMTA_ENGINE_DAEMON_INT_H

#include <stdatomic.h>
#include <stddef.h>

#include "engine/api.h"
#include "engine/config.h"
#include "engine/group.h"
#include "engine/policy.h"
#include "engine/smtpd.h"
#include "queue/queue.h"
#include "tls/tls.h"

struct eng_daemon {
    /* owned: the configuration the daemon started with. The group borrows from it
     * (egress sources, ...) and the settings that need a restart are still its, so it
     * lives until the exit; a reload never replaces it. */
    struct eng_config *cfg;
    /* owned: the last configuration a reload applied (NULL = none yet: cfg's): what the
     * next reload compares with to say what it changed. */
    struct eng_config *applied;
    struct queue_spool *spool;       /* owned */
    struct tls_ctx *client_tls;      /* owned: delivery, with the floor */
    struct tls_ctx *server_tls;      /* owned; NULL = no certificate configured */
    struct eng_policy_table *policy; /* owned: the table new attempts use */
    /* owned: tables a reload replaced. Attempts that started before it keep pointers into
     * their table (eng_worker_reconfigure), and counting those per table would put a
     * reference on the hot path for an event of a few times a year; so they live until
     * the exit. A reload builds a new table only when the policy lines, tls.floor or
     * tls.ca_file changed (otherwise it reloads the trust stores in place), so this
     * grows with policy changes, not with every SIGHUP. */
    struct eng_policy_table **retired;
    size_t nretired;
    struct eng_smtpd_credentials *creds; /* owned; NULL = no AUTH */
    char **tokens; /* owned: api.tokens, tokens_file's lines, then the local token */
    size_t ntokens;
    char *local_token;       /* owned: the token written to api.local_token_file; NULL = none */
    char *relay_networks;    /* owned: submission.relay_networks, comma-joined */
    int delivery_fd;         /* the delivery log, O_APPEND; -1 = none */
    struct eng_group *group; /* owned */
    /* The services' objects, for a reload to reach them: each written by its service's
     * start and stop, and read, only on its worker's thread (eng_group_call). */
    struct eng_smtpd *smtpd[ENG_GROUP_MAX_WORKERS]; /* worker i's listeners; NULL = none */
    struct eng_api *api;                            /* worker 0's; NULL = none or stopped */
    atomic_uint_fast64_t received_smtp;             /* messages the SMTP listeners got durable */
    atomic_uint_fast64_t received_smtp_partial;     /* ... of which only for some domains */
};

/* mkdir -p of path's parent folder (mode 0750). Returns 0 or -errno. */
int eng_daemon_make_parent(const char *path);

/* api.local_token_file (daemon_token.c): makes a fresh token (32 bytes of getrandom,
 * hex), appends a copy to d->tokens and keeps it in d->local_token, and writes it to
 * the file with mode 0600 atomically (a temporary file in the same folder, fsync,
 * rename, fsync of the folder), so a reader never sees a partial token. No-op when
 * the key is "". Returns 0 or -errno. Before the services start. */
int eng_daemon_token_write(struct eng_daemon *d);

/* Removes api.local_token_file if it still holds d->local_token (another daemon may
 * have replaced it since), and frees d->local_token. At a stop; no-op without a
 * token. */
void eng_daemon_token_remove(struct eng_daemon *d);

/* SIGHUP (daemon_reload.c): reopens the logs, checks file (NULL = the embedded
 * default) again, builds what it can apply live (policy table, API tokens, submission
 * limits, relay networks and credentials, retry schedule and timeouts) and only once
 * all of it is built gives it to every worker (eng_group_call); reloads the
 * certificate and the trust stores in place, and logs what was applied and which
 * changed settings need a restart. A file that does not check, or a part that cannot
 * be built, changes nothing. Main thread (the one non-worker thread that makes
 * eng_group_call calls; see group.h). */
void eng_daemon_reload(struct eng_daemon *d, const char *file);

/* api.tokens, then tokens_file's lines (blank lines and "#" comments skipped), then
 * local (borrowed; NULL = none). Returns 0 and *out, *n (free with
 * eng_daemon_tokens_free), or -errno / -ENOMEM. */
int eng_daemon_tokens_load(const struct eng_config *c, const char *local, char ***out, size_t *n);
void eng_daemon_tokens_free(char **tokens, size_t n);

/* submission.relay_networks, comma-joined (eng_smtpd_nets_parse syntax). Free it;
 * NULL = out of memory. */
char *eng_daemon_join_networks(const struct eng_config *c);

/* The submission server's settings from c (strings borrowed from c and d): what
 * smtp_start and a reload give eng_smtpd_new and eng_smtpd_reconfigure. */
void eng_daemon_smtpd_config(struct eng_daemon *d, const struct eng_config *c,
                             const char *relay_networks, const struct eng_smtpd_credentials *creds,
                             struct eng_smtpd_config *out);

/* The services: the SMTP listeners (every worker) and, when listen.http is set, the
 * HTTP API (worker 0). Fills out (at least 2 entries) and returns how many. d is
 * borrowed for the group's life. */
unsigned eng_daemon_services(struct eng_daemon *d, struct eng_group_service *out);

/* The queue administration ops of the API (daemon_admin.c): struct eng_api_ops's
 * queue_summary, queue_list, destinations and queue_action, with arg the daemon. They
 * ask the workers through eng_group_call, so they must run on the API's thread (worker
 * 0), the one worker thread that makes such calls (group.h). */
int eng_daemon_queue_summary(void *arg, json_t **out);
int eng_daemon_queue_list(void *arg, const char *domain, unsigned limit, json_t **out);
int eng_daemon_destinations(void *arg, json_t **out);
int eng_daemon_queue_action(void *arg, enum eng_api_action action, queue_id_t id,
                            const char *domain, json_t **out);

#endif /* FLOORMTA_ENGINE_DAEMON_INT_H */
