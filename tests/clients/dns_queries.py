"""Send DNS A queries for the given names, in order, over UDP from one socket, and wait for each
answer (as a stub resolver walking its search list does).

    dns_queries.py --server 127.0.0.1 --port PORT NAME...

Prints one JSON line {"rcodes": [...]} with the response code of each answer (null: no answer).
"""

import argparse
import json
import os
import socket
import struct


def query(name: str, qid: int) -> bytes:
    labels = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".") if l)
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", 1, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("names", nargs="+")
    args = parser.parse_args()
    rcodes = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.connect((args.server, args.port))
        for name in args.names:
            qid = int.from_bytes(os.urandom(2), "big")
            sock.send(query(name, qid))
            try:
                while True:
                    answer = sock.recv(512)
                    if answer[:2] == qid.to_bytes(2, "big"):
                        rcodes.append(answer[3] & 0x0F)
                        break
            except TimeoutError:
                rcodes.append(None)
    print(json.dumps({"rcodes": rcodes}), flush=True)


if __name__ == "__main__":
    main()
