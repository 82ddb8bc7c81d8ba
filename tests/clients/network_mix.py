"""One of each network event the dashboards chart, from inside a test pod, loopback only:
an accepted connection (to a listener of this process), an established and a refused connect,
and a DNS query answered REFUSED by a responder of this process on a private loopback address.
Prints a JSON report; every step must behave as described or the exit code is 1."""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading

DNS_ADDR = ("127.0.0.81", 53)


def refused_dns_responder(sock: socket.socket) -> None:
    query, peer = sock.recvfrom(512)
    # Same id, QR=1, RD copied, RA=1, rcode 5 (REFUSED), the question echoed.
    reply = query[:2] + bytes([0x80 | (query[2] & 0x01), 0x85]) + query[4:6] + b"\0\0\0\0\0\0" + query[12:]
    sock.sendto(reply, peer)


def main() -> int:
    report = {"accepted": 0, "established": 0, "refused": 0, "dns_refused": 0}
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        report["established"] += 1
        conn, _ = listener.accept()
        conn.close()
        report["accepted"] += 1
    listener.close()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # bound, never listening: connects are refused
    try:
        socket.create_connection(("127.0.0.1", closed_port), timeout=5)
    except ConnectionRefusedError:
        report["refused"] += 1

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(DNS_ADDR)
    t = threading.Thread(target=refused_dns_responder, args=(server,))
    t.start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(5)
    query = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + b"\x07example\x04test\x00" + struct.pack(">HH", 1, 1)
    client.sendto(query, DNS_ADDR)
    reply = client.recv(512)
    if reply[:2] == query[:2] and reply[3] & 0x0F == 5:
        report["dns_refused"] += 1
    t.join()
    server.close()
    print(json.dumps(report))
    return 0 if all(v == 1 for v in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
