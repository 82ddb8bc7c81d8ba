"""An EMULATION of the AWS Java SDK v2 `InstanceProfileCredentialsProvider` (the real SDK is not
obtainable here): its documented IMDS sequence and refresh policy, for scenario tests.

Sequence of a credential load, on one kept-alive connection: `PUT /latest/api/token`, then
`GET /latest/meta-data/iam/security-credentials-extended/` (the role) and
`GET …/security-credentials-extended/<role>`; when the extended path answers 404 it falls back
to the classic `…/security-credentials/` paths, and stays there. Every GET carries the token.

Refresh policy: credentials are stale one second before they expire (a blocking refresh) and
prefetched at fetch time + max(remaining / 2, 5 minutes).

    java_v2_imds_emulation.py --host 192.0.2.1 --port P --requests N --api-url URL

Before each of N application requests it loads credentials when the policy says so, then sends
the request (GET) to the fake API. Prints one JSON line: calls per kind, which path family
served the credentials, and errors. Every metadata call carries Java SDK v2's User-Agent
(sdk_user_agents.py).
"""

import argparse
import datetime
import http.client
import json
import time
import urllib.parse

from sdk_user_agents import USER_AGENTS

EXTENDED = "/latest/meta-data/iam/security-credentials-extended/"
CLASSIC = "/latest/meta-data/iam/security-credentials/"
STALE_BEFORE = 1.0
MIN_PREFETCH = 5 * 60


class Emulation:
    def __init__(self, args):
        self.args = args
        self.conn = http.client.HTTPConnection(args.host, args.port, timeout=5)
        self.counts = dict(token=0, role_list=0, credentials=0, extended_missing=0, upstream=0,
                           errors=0)
        self.base = EXTENDED
        self.stale_at = self.prefetch_at = None

    def call(self, kind, method, path, headers):
        self.counts[kind] += 1
        headers = {"User-Agent": USER_AGENTS["java_v2"], **headers}
        self.conn.request(method, path, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def load(self):
        status, token = self.call("token", "PUT", "/latest/api/token",
                                  {"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
        if status != 200:
            raise RuntimeError(f"token: HTTP {status}")
        headers = {"X-aws-ec2-metadata-token": token.decode()}
        status, role = self.call("role_list", "GET", self.base, headers)
        if status == 404 and self.base == EXTENDED:
            # Not an error: the instance has no extended API; that call is counted separately.
            self.counts["role_list"] -= 1
            self.counts["extended_missing"] += 1
            self.base = CLASSIC
            status, role = self.call("role_list", "GET", self.base, headers)
        if status != 200:
            raise RuntimeError(f"role list: HTTP {status}")
        role = role.decode().splitlines()[0].strip()
        status, body = self.call("credentials", "GET", self.base + role, headers)
        if status != 200:
            raise RuntimeError(f"credentials: HTTP {status}")
        expiration = datetime.datetime.strptime(json.loads(body)["Expiration"],
                                                "%Y-%m-%dT%H:%M:%SZ")
        expires = expiration.replace(tzinfo=datetime.timezone.utc).timestamp()
        now = time.time()
        self.stale_at = expires - STALE_BEFORE
        self.prefetch_at = now + max((expires - now) / 2, MIN_PREFETCH)

    def run(self):
        api = urllib.parse.urlsplit(self.args.api_url)
        upstream = http.client.HTTPConnection(api.hostname, api.port, timeout=5)
        for _ in range(self.args.requests):
            try:
                now = time.time()
                if self.stale_at is None or now >= self.stale_at or now >= self.prefetch_at:
                    self.load()
                self.counts["upstream"] += 1
                upstream.request("GET", "/")
                upstream.getresponse().read()
            except Exception:  # counted: the test asserts there are none
                self.counts["errors"] += 1
        self.conn.close()
        upstream.close()
        return {**self.counts, "path": "extended" if self.base == EXTENDED else "classic"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--api-url", required=True)
    print(json.dumps(Emulation(parser.parse_args()).run()), flush=True)


if __name__ == "__main__":
    main()
