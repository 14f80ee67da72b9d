#!/usr/bin/env bash
# Installs the Debian packages floormta builds and tests with, only those missing
# (a no-op when all are present). Run as root on Debian 12.
set -euo pipefail

pkgs=(
    build-essential cmake pkg-config clang-format
    android-libboringssl-dev   # BoringSSL: the only TLS library floormta links
    liburing-dev               # io_uring event loop
    libc-ares-dev              # asynchronous DNS (issue 3)
    libjemalloc-dev            # allocator of floormta's programs
    libbenchmark-dev           # Google Benchmark behind bench/bench.h
    libcmocka-dev              # unit-test framework
    libjansson-dev             # JSON output (probe --json) and, later, the HTTP API
    libyaml-dev                # the configuration file (engine/config.h): line and column of every node
    time                       # peak-RSS measurement in the integration tests
    dnsmasq-base               # the real DNS server the DNS tests start on loopback (no service)
    jq                         # JSON assertions in the integration tests
    libmicrohttpd-dev          # HTTP framing of the metrics and admin API server (GnuTLS, not OpenSSL)
    prometheus                 # promtool, to check /metrics (the service is not started: see below)
    libcrypt-dev               # crypt_rn: the submission server's credentials file
    swaks                      # SMTP client driving the submission server's tests
    libnet-ssleay-perl         # swaks --tls (a Recommends, which --no-install-recommends skips)
    postfix                    # only for smtp-source (load client); never configured or started
    openssl                    # s_client: the submission listener refuses TLS 1.0 / 1.1
    whois                      # mkpasswd, to make credentials-file hashes
    gnuplot-nox                # bench/plot.sh: the load scenarios' throughput and latency PNGs
)

# make fuzz only: clang and its libFuzzer runtime (not needed by make run / make test).
if [ "${FLOORMTA_DEPS_FUZZ:-0}" = 1 ]; then
    pkgs+=(clang libclang-rt-14-dev)
fi

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Postfix comes only for smtp-source: "No configuration" leaves it unconfigured, so it
# neither listens on :25 nor runs.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
# floormta needs only promtool from the prometheus package. On a host with systemd its
# postinst starts a Prometheus server (containers with a policy-rc.d that says 101 start
# nothing): stop and disable it, it has no place on a build/test machine.
if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null &&
    systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
# Should anything have started Postfix anyway, stop it: the tests own the loopback ports.
if command -v postfix >/dev/null && postfix status >/dev/null 2>&1; then
    postfix stop || true
fi
