"""Real botocore, taking its credentials from one provider: the container provider (an
ECS-style full URI) or the IMDS provider.

    botocore_client.py --credentials-url http://127.0.0.1:PORT/v2/credentials/test \
        --api-url http://127.0.0.1:PORT --calls K
    botocore_client.py --imds-url http://192.0.2.1:PORT --api-url … --calls K [--proxy URL]

Makes K STS GetCallerIdentity calls against the fake API and prints one JSON line
{"calls": K, "errors": n}. botocore swallows failed advisory refreshes (it logs a warning and
keeps the old credentials), so those warnings count as errors too (with --allow-warnings they
are reported as "warnings" instead: the IMDSv1 fallback after an unanswered token request warns).
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


def isolate_environment(credentials_url=None, imds_url=None, proxy=None):
    """Leave botocore exactly one credential source, and no way off the machine: no other
    provider, no proxies (unless one is asked for), no shared config or credential files."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower().endswith("_proxy"):
            del os.environ[name]
    empty = tempfile.NamedTemporaryFile(prefix="credwatch-aws-", delete=False)
    empty.close()
    os.environ.update({
        "AWS_CONFIG_FILE": empty.name,
        "AWS_SHARED_CREDENTIALS_FILE": empty.name,
    })
    if credentials_url:
        os.environ["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = credentials_url
        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    else:
        # The IMDS provider, at the fake IMDS only (never the real address).
        os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = imds_url
    if proxy:
        os.environ["HTTP_PROXY"] = proxy
    else:
        os.environ["NO_PROXY"] = "*"
    return empty.name


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--credentials-url")
    source.add_argument("--imds-url")
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--proxy", help="HTTP_PROXY for every call, metadata included")
    parser.add_argument("--allow-warnings", action="store_true")
    args = parser.parse_args()

    empty = isolate_environment(args.credentials_url, args.imds_url, args.proxy)
    # Imported after the environment is set: botocore reads some of it at import time.
    import botocore.config
    import botocore.session

    warnings = _Warnings()
    logging.getLogger("botocore").addHandler(warnings)
    errors = 0
    try:
        session = botocore.session.get_session()
        if args.imds_url:
            # Only the IMDS provider: no environment, file, process or container provider.
            resolver = session.get_component("credential_provider")
            resolver.providers = [p for p in resolver.providers if p.METHOD == "iam-role"]
        client = session.create_client(
            "sts", region_name="us-east-1", endpoint_url=args.api_url,
            config=botocore.config.Config(retries={"total_max_attempts": 1}))
        for _ in range(args.calls):
            try:
                client.get_caller_identity()
            except Exception:  # counted: the test asserts there are none
                errors += 1
    finally:
        os.unlink(empty)
    report = {"calls": args.calls, "errors": errors + warnings.count}
    if args.allow_warnings:
        report = {"calls": args.calls, "errors": errors, "warnings": warnings.count}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
