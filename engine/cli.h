/*
 * engine/cli.h — the `floormta` subcommands. main.c dispatches on argv[1]; each command
 * parses its own options and returns the process exit code.
 */
#ifndef FLOORMTA_ENGINE_CLI_H
#define FLOORMTA_ENGINE_CLI_H

#include <stddef.h>

struct eng_config;

/* `floormta probe HOST[:PORT] --name MXNAME [--ca FILE] [--json] ...`.
 * Exit 0: the receiver meets the floor; 2: refused by the floor; 1: error.
 * `floormta probe DOMAIN [--dns IP[:PORT]]... [--port N] ...`: every MX host address.
 * Exit 0: at least one meets the floor; 2: none does; 1: DNS failure.
 * argv is borrowed; argv[0] is "probe". */
int eng_cmd_probe(int argc, char **argv);

/* `floormta check-config [--syntax-only] FILE` and `floormta check-config --print-default`
 * (engine/config.h). Exit 0: valid, with a one-line summary on stdout; 1: invalid or
 * unreadable, every error on stderr as FILE:LINE:COL: KEY: message.
 * argv is borrowed; argv[0] is "check-config". */
int eng_cmd_check_config(int argc, char **argv);

/* `floormta run [--config FILE] [--log-level L]`: the daemon (engine/daemon.c). Returns
 * 0 after a clean drain (SIGTERM, SIGINT), 1 when the configuration is invalid or
 * something cannot start. argv is borrowed; argv[0] is "run". */
int eng_cmd_run(int argc, char **argv);

/* `floormta send --from A --to B [--to C]... [--server HOST:PORT] [--config FILE]
 * [FILE|-]` (engine/cmd_send.c): one message, read from FILE or standard input, through
 * the running daemon's SMTP submission listener. Prints the queue id. Exit 0: accepted;
 * 2: refused by the server (a 5xx or 4xx reply); 1: error (cannot connect, read,
 * protocol). argv is borrowed; argv[0] is "send". */
int eng_cmd_send(int argc, char **argv);

/* ---- shared by the commands that talk to a running daemon (engine/cli_token.c) ---- */

/* The configuration the daemon runs with: file (borrowed; NULL = the embedded default)
 * parsed, not checked against the file system. Returns 0 and *out (free with
 * eng_config_free), or 1 after printing every error to stderr, prefixed with cmd. */
int eng_cli_config(const char *cmd, const char *file, struct eng_config **out);

/* The API token a command presents, first found of: token_opt (--token), the
 * environment variable FLOORMTA_TOKEN, the first line of the daemon's
 * api.local_token_file from cfg (NULL = the embedded default's). All borrowed.
 * Returns 0 and *out (free with free()), -ENOENT when none of them gives one (no
 * option, no variable, no file configured or the file is missing: the daemon is not
 * running, or runs from another folder), or -errno / -EINVAL (the file is unreadable
 * or empty). On an error, err (errlen bytes) says what was tried, for the user. */
int eng_cli_token(const char *token_opt, const struct eng_config *cfg, char **out, char *err,
                  size_t errlen);
/* `floormta queue [list|summary|flush|bounce|delete] [--id ID] [--domain D] ...` and
 * `floormta destinations`: clients of the running daemon's HTTP API (engine/cmd_queue.c).
 * Exit 0: done; 1: an error (the API's answer on stderr). argv is borrowed; argv[0] is
 * "queue" or "destinations". */
int eng_cmd_queue(int argc, char **argv);
int eng_cmd_destinations(int argc, char **argv);

/* One HTTP/1.1 request to base ("http://host:port"; plain HTTP only) for path (with
 * its query), with "Authorization: Bearer token" unless token is NULL and a JSON body
 * unless body is NULL; timeout_s bounds each send and receive. All borrowed. Returns 0
 * with *status and *answer (the body, NUL-terminated; free() it), or -EPROTONOSUPPORT
 * (not http://), -EINVAL (bad URL), -EPROTO (not HTTP), -ETIMEDOUT, -ENOMEM, -errno
 * (engine/cli_http.c). */
int eng_cli_http(const char *base, const char *method, const char *path, const char *token,
                 const char *body, unsigned timeout_s, long *status, char **answer);

#endif /* FLOORMTA_ENGINE_CLI_H */
