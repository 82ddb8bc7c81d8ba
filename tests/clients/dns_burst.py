"""Send N DNS queries (ids 0..N-1, type A) as fast as possible from one UDP socket (or several,
in turn), without waiting for answers; print how many were sent.

    dns_burst.py --host 127.0.0.81 --port 53 --count 17000 --name burst.example [--sockets 64]
"""

import argparse
import ipaddress
import socket
import struct
import sys


def query(ident: int, name: str) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack(">HH", 1, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--name", default="burst.example")
    parser.add_argument("--first-id", type=int, default=0)
    parser.add_argument("--sockets", type=int, default=1, help="query i goes out on socket i mod N")
    args = parser.parse_args()
    if not ipaddress.ip_address(args.host).is_loopback:
        sys.exit(f"refusing to send to non-loopback address {args.host}")
    if args.first_id + args.count > 65536:
        sys.exit("ids must stay distinct: first-id + count <= 65536")
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(args.sockets)]
    try:
        for i in range(args.first_id, args.first_id + args.count):
            socks[i % args.sockets].sendto(query(i, args.name), (args.host, args.port))
    finally:
        for sock in socks:
            sock.close()
    print(args.count, flush=True)


if __name__ == "__main__":
    main()
