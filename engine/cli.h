/*
 * engine/cli.h — the `floormta` subcommands. main.c dispatches on argv[1]; each command
 * parses its own options and returns the process exit code.
 */
#ifndef FLOORMTA_ENGINE_CLI_H
#define FLOORMTA_ENGINE_CLI_H

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

#endif /* FLOORMTA_ENGINE_CLI_H */
