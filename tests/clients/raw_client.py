"""Send arbitrary bytes to a loopback server and print what came back.

    raw_client.py --host 127.0.0.1 --port PORT --send-hex HEX

Half-closes after sending (so a server waiting for a header terminator sees EOF), reads to EOF and
prints one JSON line {"sent": HEX, "received": HEX}.
"""

import argparse
import json
import socket


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--send-hex", required=True)
    args = parser.parse_args()
    payload = bytes.fromhex(args.send_hex)
    received = b""
    with socket.create_connection((args.host, args.port), timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            received += chunk
    print(json.dumps({"sent": payload.hex(), "received": received.hex()}), flush=True)


if __name__ == "__main__":
    main()
