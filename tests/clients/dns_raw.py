"""Send arbitrary datagrams to a loopback DNS port, one per line of stdin, from one UDP socket.

    dns_raw.py --host 127.0.0.80 --port 53

Each stdin line is a payload in hex; after sending it the client prints `sent <n>` (n = bytes
handed to the kernel), so the test can check the agent after every single datagram. Exits at EOF.
"""

import argparse
import ipaddress
import socket
import sys


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if not ipaddress.ip_address(args.host).is_loopback:
        sys.exit(f"refusing to send to non-loopback address {args.host}")
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        for line in sys.stdin:
            payload = bytes.fromhex(line.strip())
            sent = sock.sendto(payload, (args.host, args.port))
            print(f"sent {sent}", flush=True)


if __name__ == "__main__":
    main()
