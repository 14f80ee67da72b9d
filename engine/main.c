/*
 * engine/main.c — the `floormta` program: dispatches to a subcommand (cli.h).
 */
#include <stdio.h>
#include <string.h>

#include "engine/cli.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: floormta COMMAND [OPTIONS]\n"
               "\n"
               "commands:\n"
               "  probe HOST[:PORT] --name MXNAME [--ca FILE] [--floor 1.2|1.3] [--json]\n"
               "        connect to one receiving SMTP server, STARTTLS, and judge it\n"
               "        against the TLS floor (exit 0 pass, 2 refused, 1 error)\n"
               "  probe DOMAIN [--dns IP[:PORT]]... [--port N] [--ca FILE] [--json]\n"
               "        resolve the domain's MX hosts and judge every address of each\n"
               "        (exit 0 one passes, 2 none passes, 1 DNS failure)\n"
               "  run [--config FILE] [--log-level LEVEL]\n"
               "        run the engine: SMTP submission, the HTTP API and /metrics, delivery\n"
               "        (without --config: the embedded default; SIGTERM drains and exits 0)\n"
               "  send --from ADDR --to ADDR [--to ADDR]... [FILE|-] [--server HOST:PORT]\n"
               "        submit one message to the running daemon over SMTP, print its queue id\n"
               "        (exit 0 accepted, 2 refused, 1 error)\n"
               "  check-config [--syntax-only] FILE\n"
               "        validate a configuration file; every error as FILE:LINE:COL: KEY\n"
               "        (exit 0 valid, 1 invalid)\n"
               "  check-config --print-default\n"
               "        print the embedded default configuration\n"
               "  queue [list|summary] [--domain D] [--limit N] [--api URL] [--token T] [--json]\n"
               "        the running daemon's queue: messages with their recipients' states, or\n"
               "        counts per domain\n"
               "  queue flush|bounce|delete (--id ID | --domain D) [--api URL] [--token T]\n"
               "        retry now; give up with a DSN to the sender; remove without one\n"
               "  destinations [--api URL] [--token T] [--json]\n"
               "        the capability cache: each MX host's TLS verdict, reason, expiry\n"
               "\n"
               "`floormta COMMAND --help` describes a command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 1;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "probe") == 0)
        return eng_cmd_probe(argc - 1, argv + 1);
    if (strcmp(cmd, "run") == 0)
        return eng_cmd_run(argc - 1, argv + 1);
    if (strcmp(cmd, "send") == 0)
        return eng_cmd_send(argc - 1, argv + 1);
    if (strcmp(cmd, "queue") == 0)
        return eng_cmd_queue(argc - 1, argv + 1);
    if (strcmp(cmd, "destinations") == 0)
        return eng_cmd_destinations(argc - 1, argv + 1);
    if (strcmp(cmd, "check-config") == 0)
        return eng_cmd_check_config(argc - 1, argv + 1);
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "floormta: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 1;
}
