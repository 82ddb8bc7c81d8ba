"""Traffic to link-local service stand-ins, with known packet counts in known seconds.

    linklocal_traffic.py sink                      UDP sinks on 127.0.0.1 (DNS-like, NTP-like):
                                                   prints `READY <dns port> <ntp port>`, and on
                                                   SIGTERM one JSON line of datagrams received
    linklocal_traffic.py http HOST PORT N          N HTTP GETs to a (fake) IMDS, a connection each
    linklocal_traffic.py udp HOST PORT N dns|ntp   N DNS queries or NTP client packets
    linklocal_traffic.py burst HOST PORT N1 [N2…]  N1 NTP packets right after a CLOCK_MONOTONIC
                                                   second begins, N2 right after the next, …

Each prints one JSON line. `burst` reports the second each packet was sent in (CLOCK_MONOTONIC,
the clock the kernel's bpf_ktime_get_ns reads) from the clock read before and after its send:
{"seconds": {"S": count, …}, "ambiguous": [[S, S+1], …]} — a packet whose send straddled a second
boundary is listed as ambiguous instead of guessed.
"""

import http.client
import json
import signal
import socket
import struct
import sys
import time

NTP_REQUEST = b"\x23" + b"\x00" * 47  # LI 0, version 4, mode 3 (client)
ROLE_PATH = "/latest/meta-data/iam/security-credentials/credwatch-test-role"


def dns_query(i: int) -> bytes:
    header = struct.pack(">HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0)
    return header + b"\x09linklocal\x04test\x00" + struct.pack(">HH", 1, 1)


def sink() -> None:
    socks = []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.05)
        socks.append(s)
    received = [0, 0]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print("READY", *(s.getsockname()[1] for s in socks), flush=True)
    while not stop:
        for i, s in enumerate(socks):
            try:
                while True:
                    s.recv(2048)
                    received[i] += 1
            except (socket.timeout, BlockingIOError):
                pass
    print(json.dumps({"dns": received[0], "ntp": received[1]}), flush=True)


def http_calls(host: str, port: int, n: int) -> dict:
    ok = 0
    for _ in range(n):
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request("GET", ROLE_PATH)
            response = conn.getresponse()
            response.read()
            ok += response.status == 200
        finally:
            conn.close()
    return {"calls": n, "ok": ok}


def udp(host: str, port: int, n: int, kind: str) -> dict:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(n):
            s.sendto(dns_query(i) if kind == "dns" else NTP_REQUEST, (host, port))
    return {"sent": n}


def next_second() -> int:
    """Waits (reading the clock) until a new CLOCK_MONOTONIC second begins; returns it."""
    start = int(time.monotonic())
    while (now := int(time.monotonic())) == start:
        pass
    return now


def burst(host: str, port: int, counts: list[int]) -> dict:
    seconds: dict[int, int] = {}
    ambiguous = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, port))
        for n in counts:
            next_second()
            for _ in range(n):
                before = int(time.monotonic())
                s.send(NTP_REQUEST)
                after = int(time.monotonic())
                if before == after:
                    seconds[before] = seconds.get(before, 0) + 1
                else:
                    ambiguous.append([before, after])
    return {"seconds": {str(k): v for k, v in sorted(seconds.items())}, "ambiguous": ambiguous}


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "sink":
        sink()
        return
    host, port = argv[1], int(argv[2])
    if mode == "http":
        report = http_calls(host, port, int(argv[3]))
    elif mode == "udp":
        report = udp(host, port, int(argv[3]), argv[4])
    elif mode == "burst":
        report = burst(host, port, [int(n) for n in argv[3:]])
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
