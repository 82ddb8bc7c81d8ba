"""Resolve names with glibc's getaddrinfo, the way an application in a pod does, then stay alive.

    dns_lookup.py [--family unspec|inet|inet6] NAME...

Prints one JSON line {"results": {NAME: [addresses] or "error: ..."}, "seconds": wall time of the
lookups}, then waits until its stdin is closed before exiting: the test keeps it alive until the
agent has read this process's /etc/resolv.conf (through /proc/<pid>/root) and then lets it go.
"""

import argparse
import json
import socket
import sys
import time

FAMILIES = {"unspec": socket.AF_UNSPEC, "inet": socket.AF_INET, "inet6": socket.AF_INET6}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=FAMILIES, default="unspec")
    parser.add_argument("names", nargs="+")
    args = parser.parse_args()
    results = {}
    start = time.monotonic()
    for name in args.names:
        try:
            infos = socket.getaddrinfo(name, None, FAMILIES[args.family], socket.SOCK_STREAM)
            results[name] = sorted({info[4][0] for info in infos})
        except socket.gaierror as err:
            results[name] = f"error: {err}"
    seconds = time.monotonic() - start
    print(json.dumps({"results": results, "seconds": seconds}), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
