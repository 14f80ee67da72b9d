#!/usr/bin/env bash
# tests/integration/test_check_config.sh — `floormta check-config`: a good file (exit 0,
# one summary line), a bad one (exit 1, every error as FILE:LINE:COL: KEY: message), a
# missing file, and the embedded default printed and read back through a pipe.
. "$(dirname "$0")/lib.sh"

FLOORMTA="$BIN/floormta"
cd "$WORK" || exit 1

cat >good.yaml <<'YAML'
workers: 2
spool:
  dir: ./spool
dns:
  servers: [127.0.0.1:5353]
tls:
  floor: "1.3"
delivery:
  helo_name: mx.floormta.test
  sources: [127.0.0.1]
policy:
  example.com: "floor=1.3"
  .partner.example: opportunistic
YAML
OUT=$("$FLOORMTA" check-config good.yaml 2>err.txt)
RC=$?
check "good file: exit 0" [ "$RC" -eq 0 ]
check "good file: one summary line" [ "$(wc -l <<<"$OUT")" -eq 1 ]
check "good file: summary names the file and the workers" grep -q '^good.yaml: ok: workers 2' <<<"$OUT"
check "good file: nothing on stderr" [ ! -s err.txt ]

cat >bad.yaml <<'YAML'
workers: lots
spool:
  dir: ./spool
  colour: blue
listen:
  smtp:
    - address: 127.0.0.1:2525
      mode: implicit
policy:
  bank.example: "floor=1.4"
YAML
"$FLOORMTA" check-config bad.yaml >out.txt 2>err.txt
RC=$?
check "bad file: exit 1" [ "$RC" -eq 1 ]
check "bad file: nothing on stdout" [ ! -s out.txt ]
check "bad file: workers at 1:10" grep -q "^bad.yaml:1:10: workers: 'lots' is not a whole number" err.txt
check "bad file: unknown key at 4:3" grep -q "^bad.yaml:4:3: spool: unknown key 'colour'" err.txt
check "bad file: implicit without a certificate at 8:13" \
    grep -q "^bad.yaml:8:13: listen.smtp\[0\].mode: mode implicit needs listen.tls.cert_file" err.txt
check "bad file: policy line at 10:17" grep -q '^bad.yaml:10:17: policy.bank.example: bad policy line' err.txt
check "bad file: the count" grep -q '^bad.yaml: 4 errors$' err.txt

cat >badfiles.yaml <<'YAML'
tls:
  ca_file: /nonexistent/ca.pem
YAML
"$FLOORMTA" check-config badfiles.yaml >out.txt 2>err.txt
check "unreadable trust store: exit 1" [ $? -eq 1 ]
check "unreadable trust store: named at 2:12" grep -q '^badfiles.yaml:2:12: tls.ca_file: cannot load' err.txt
"$FLOORMTA" check-config --syntax-only badfiles.yaml >out.txt 2>err.txt
check "--syntax-only skips the files: exit 0" [ $? -eq 0 ]

"$FLOORMTA" check-config missing.yaml >out.txt 2>err.txt
check "missing file: exit 1" [ $? -eq 1 ]
check "missing file: named with the reason" grep -q '^missing.yaml: cannot open: No such file or directory' err.txt

"$FLOORMTA" check-config --print-default >default.yaml
check "--print-default: prints the documented default" grep -q '^  smtp:' default.yaml
OUT=$("$FLOORMTA" check-config --print-default | "$FLOORMTA" check-config /dev/stdin 2>err.txt)
check "--print-default | check-config /dev/stdin: exit 0" [ $? -eq 0 ]
check "default: SMTP on 127.0.0.1:2525 without TLS, HTTP on 127.0.0.1:8025" \
    grep -q '1 SMTP listener without TLS, HTTP 127.0.0.1:8025' <<<"$OUT"
check "default: spool under ./var" grep -q 'spool ./var/spool' <<<"$OUT"
"$FLOORMTA" check-config --print-default | "$FLOORMTA" check-config - >/dev/null 2>&1
check "check-config - reads standard input" [ $? -eq 0 ]

"$FLOORMTA" check-config >/dev/null 2>&1
check "no FILE: exit 1" [ $? -eq 1 ]
"$FLOORMTA" check-config --help >out.txt
check "--help: exit 0 with usage" grep -q 'usage: floormta check-config' out.txt

finish
