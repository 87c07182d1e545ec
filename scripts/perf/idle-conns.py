#!/usr/bin/env python3
"""Idle TLS connections' memory and time to ready, for docs/PERFORMANCE.md.

Starts the release binary on the peer benchmark's policy (../shared/bench-peers, set up by
scripts/perf/profile-perf.sh or bench.sh in $BENCH_DIR), measures the time from start until the
HTTPS port accepts a connection and how long the first TLS handshake then takes (it pays
aws-lc's one-time entropy seeding), then opens N idle TLS connections (spread over
several loopback source addresses, below the per-address cap) and reports the growth of
the process's RSS per connection. Loopback only.

Usage: scripts/perf/idle-conns.py [N (default 2000)]   (extra env: FLOWGATE_THREADS, TASKSET=1)
"""
import os
import socket
import ssl
import subprocess
import sys
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS = os.environ.get("BENCH_DIR", "/tmp/flowgate-peers")
PORT = 18446


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def handshake(context, source):
    sock = socket.create_connection(("127.0.0.1", PORT), timeout=5, source_address=(source, 0))
    return context.wrap_socket(sock, server_hostname="localhost")


def main():
    config = os.path.join(PEERS, "conf", "flowgate.toml")
    if not os.path.exists(config):
        sys.exit(f"{config} is missing: run scripts/perf/profile-perf.sh (or bench.sh) once to set it up")
    binary = os.path.join(PROJECT, "target", "release", "flowgate")
    command = [binary, "serve", "--config", config]
    if os.environ.get("TASKSET"):
        command = ["taskset", "-c", "1", *command]
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    started = time.monotonic()
    gateway = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "RUST_LOG": "warn"})
    try:
        while True:
            try:
                first = socket.create_connection(("127.0.0.1", PORT), timeout=5)
                break
            except OSError:
                if time.monotonic() - started > 10:
                    sys.exit("the gateway did not answer within 10 s")
                time.sleep(0.0005)
        ready_ms = (time.monotonic() - started) * 1000
        context.wrap_socket(first, server_hostname="localhost").close()
        first_ms = (time.monotonic() - started) * 1000 - ready_ms
        time.sleep(0.5)
        before = rss_kib(gateway.pid)
        held = []
        for i in range(N):
            held.append(handshake(context, f"127.0.0.{2 + i // 500}"))
        time.sleep(1.0)
        after = rss_kib(gateway.pid)
        alive = sum(1 for s in held if s.fileno() >= 0)
        print(f"accepting after {ready_ms:.0f} ms, first TLS handshake {first_ms:.0f} ms; RSS {before} KiB idle, {after} KiB with {alive} idle TLS "
              f"connections: {(after - before) / N:.1f} KiB per connection")
        for s in held:
            s.close()
    finally:
        gateway.terminate()
        gateway.wait(timeout=10)


if __name__ == "__main__":
    main()
