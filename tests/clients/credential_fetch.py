"""Fetch role credentials from a (fake) IMDS, each call on a new TCP connection.

    credential_fetch.py --host 127.0.0.1 --port PORT [--calls N] [--hop-file FILE]

Without --hop-file it makes N calls from the cgroup it was started in. With it, it visits every
cgroup directory listed in FILE (one path a line): it moves itself into the cgroup (writing its
pid to cgroup.procs, which needs root) and then makes N calls, so one process can speak for
thousands of pods. A socket belongs to the cgroup its creator was in when it was created, so
every call made after a move is attributed to the new cgroup. Prints one JSON line:
{"calls": …, "errors": …, "cgroups": …}.
"""

import argparse
import http.client
import json
import os

ROLE_LIST_PATH = "/latest/meta-data/iam/security-credentials/"
ROLE = "credwatch-test-role"


def fetch(host: str, port: int) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", ROLE_LIST_PATH + ROLE)
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except OSError:
        return False
    finally:
        conn.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--hop-file")
    args = parser.parse_args()
    cgroups = [None]
    if args.hop_file:
        with open(args.hop_file) as f:
            cgroups = [line.strip() for line in f if line.strip()]
    calls = errors = 0
    for cgroup in cgroups:
        if cgroup is not None:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
                procs.write(str(os.getpid()))
        for _ in range(args.calls):
            calls += 1
            errors += not fetch(args.host, args.port)
    print(json.dumps({"calls": calls, "errors": errors, "cgroups": len(cgroups)}), flush=True)


if __name__ == "__main__":
    main()
