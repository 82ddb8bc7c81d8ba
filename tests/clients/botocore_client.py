"""Real botocore, taking its credentials from an ECS-style full URI on loopback.

    botocore_client.py --credentials-url http://127.0.0.1:PORT/v2/credentials/test \
        --api-url http://127.0.0.1:PORT --calls K

Makes K STS GetCallerIdentity calls against the fake API and prints one JSON line
{"calls": K, "errors": n}. botocore swallows failed advisory refreshes (it logs a warning and
keeps the old credentials), so those warnings count as errors too.
"""

import argparse
import json
import logging
import os
import tempfile


class _Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record):
        self.count += 1


def isolate_environment(credentials_url):
    """Leave botocore exactly one credential source, and no way off the machine: no IMDS
    fallback, no proxies, no shared config or credential files."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower().endswith("_proxy"):
            del os.environ[name]
    empty = tempfile.NamedTemporaryFile(prefix="credwatch-aws-", delete=False)
    empty.close()
    os.environ.update({
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": credentials_url,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": empty.name,
        "AWS_SHARED_CREDENTIALS_FILE": empty.name,
        "NO_PROXY": "*",
    })
    return empty.name


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--credentials-url", required=True)
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--calls", type=int, required=True)
    args = parser.parse_args()

    empty = isolate_environment(args.credentials_url)
    # Imported after the environment is set: botocore reads some of it at import time.
    import botocore.config
    import botocore.session

    warnings = _Warnings()
    logging.getLogger("botocore").addHandler(warnings)
    errors = 0
    try:
        client = botocore.session.get_session().create_client(
            "sts", region_name="us-east-1", endpoint_url=args.api_url,
            config=botocore.config.Config(retries={"total_max_attempts": 1}))
        for _ in range(args.calls):
            try:
                client.get_caller_identity()
            except Exception:  # counted: the test asserts there are none
                errors += 1
    finally:
        os.unlink(empty)
    print(json.dumps({"calls": args.calls, "errors": errors + warnings.count}), flush=True)


if __name__ == "__main__":
    main()
