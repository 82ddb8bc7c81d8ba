"""A client with the AWS Java SDK v1 `EC2CredentialsFetcher` refresh policy, for scenario tests.

Before each application request it refreshes credentials when it has none, when they expire in
less than 15 minutes, or when the last refresh is an hour old. A refresh is GET role list, then
GET role credentials; with --imdsv2 each GET is preceded by its own `PUT /latest/api/token`, as
the IMDSv2-capable SDK builds do (4 calls per refresh). Then one request to the upstream.

Every metadata call carries Java SDK v1's User-Agent (sdk_user_agents.py). Every HTTP call uses a
new TCP connection. Prints one JSON line: the calls it made per kind,
failures (`errors`: exceptions or non-2xx) and a sha256 over the metadata response bodies in
order, for comparison with what the server sent.
"""

import argparse
import datetime
import hashlib
import http.client
import json
import time

from sdk_user_agents import USER_AGENTS

EXPIRATION_THRESHOLD = 15 * 60
REFRESH_THRESHOLD = 60 * 60
ROLE_LIST_PATH = "/latest/meta-data/iam/security-credentials/"


class Client:
    def __init__(self, args):
        self.args = args
        self.counts = dict(token=0, role_list=0, credentials=0, upstream=0, errors=0)
        self.digest = hashlib.sha256()
        self.expiration = None
        self.fetched_at = None

    def call(self, kind, host, port, method, path, headers=None):
        self.counts[kind] += 1
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if not 200 <= response.status < 300:
            raise RuntimeError(f"{method} {path}: HTTP {response.status}")
        if kind != "upstream":
            self.digest.update(body)
        return body

    def metadata(self, kind, method, path, headers=None):
        headers = {"User-Agent": USER_AGENTS["java_v1"], **(headers or {})}
        return self.call(kind, self.args.host, self.args.port, method, path, headers)

    def read_resource(self, kind, path):
        headers = {}
        if self.args.imdsv2:
            token = self.metadata("token", "PUT", "/latest/api/token",
                                  {"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
            headers["X-aws-ec2-metadata-token"] = token.decode()
        return self.metadata(kind, "GET", path, headers)

    def needs_refresh(self):
        if self.expiration is None:
            return True
        return (self.expiration - time.time() < EXPIRATION_THRESHOLD
                or time.monotonic() - self.fetched_at > REFRESH_THRESHOLD)

    def refresh(self):
        role = self.read_resource("role_list", ROLE_LIST_PATH).decode().splitlines()[0].strip()
        document = json.loads(self.read_resource("credentials", ROLE_LIST_PATH + role))
        expiration = datetime.datetime.strptime(document["Expiration"], "%Y-%m-%dT%H:%M:%SZ")
        self.expiration = expiration.replace(tzinfo=datetime.timezone.utc).timestamp()
        self.fetched_at = time.monotonic()

    def run(self):
        for _ in range(self.args.requests):
            try:
                if self.needs_refresh():
                    self.refresh()
                self.call("upstream", self.args.upstream_host, self.args.upstream_port, "GET",
                          "/index/_search")
            except Exception:  # any failure is what the test looks for; keep going and count it
                self.counts["errors"] += 1
        return {**self.counts, "body_sha256": self.digest.hexdigest()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="metadata endpoint address (loopback)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True, help="application requests")
    parser.add_argument("--upstream-host", required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--imdsv2", action="store_true")
    print(json.dumps(Client(parser.parse_args()).run()), flush=True)


if __name__ == "__main__":
    main()
