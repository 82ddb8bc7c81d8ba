"""EMULATIONS of AWS SDKs' metadata calls, for the `sdk` label's scenario tests: the SDKs below
cannot be obtained on this machine, so this client makes the credential calls they make (IMDSv2
token, role list, role credentials) with the `User-Agent` each sends on them, as written in that
SDK's source. Only the header is emulated, not the SDK's refresh policy (java_v1_policy.py and
java_v2_imds_emulation.py emulate the Java policies; botocore, the JavaScript v3 SDK and the Rust
SDK run for real in test_sdk_matrix.py).

    sdk_user_agents.py --sdk java_v1 --host 127.0.0.1 --port PORT

Prints one JSON line: {"sdk": …, "user_agent": …, "calls": …, "errors": …}.
"""

import argparse
import http.client
import json

ROLE_LIST_PATH = "/latest/meta-data/iam/security-credentials/"

# The `sdk` label each should get, and the User-Agent the SDK sends on its IMDS calls (versions
# and platform parts are examples; only the leading product token decides the family).
USER_AGENTS = {
    # aws-sdk-java v1: EC2ResourceFetcher / InstanceMetadataServiceResourceFetcher send
    # USER_AGENT = VersionInfoUtils.getUserAgent() ("aws-sdk-java/<version> <os>/<os version>
    # <vm name>/<vm version> java/<java version> …").
    "java_v1": "aws-sdk-java/1.12.780 Linux/6.1.0-18-cloud-amd64 "
               "OpenJDK_64-Bit_Server_VM/17.0.10+7 java/17.0.10 vendor/Eclipse_Adoptium",
    # aws-sdk-java-v2: imds's DefaultEc2MetadataClient and the instance-profile provider send
    # SdkUserAgent.create().userAgent() ("aws-sdk-java/<2.x version> <os> <vm> Java/<version>").
    "java_v2": "aws-sdk-java/2.25.60 Linux/6.1.0-18-cloud-amd64 "
               "OpenJDK_64-Bit_Server_VM/17.0.10+7 Java/17.0.10 vendor/Eclipse_Adoptium io/sync "
               "http/Apache cfg/retry-mode#legacy",
    # aws-sdk-go v1: ec2metadata's client carries the SDK's user-agent handler
    # ("aws-sdk-go/<version> (<go version>; <os>; <arch>)").
    "go_v1": "aws-sdk-go/1.55.5 (go1.22.5; linux; amd64)",
    # aws-sdk-go-v2: feature/ec2/imds adds its own api/ metadata to the SDK's user agent.
    "go_v2": "aws-sdk-go-v2/1.30.3 ua/2.1 os/linux lang/go#1.22.5 md/GOOS#linux "
             "md/GOARCH#amd64 api/imds#1.16.11",
    # aws-sdk-net: EC2InstanceMetadata sets InternalSDKUtils.BuildUserAgentString(…)
    # ("aws-sdk-dotnet-coreclr/<version> aws-sdk-dotnet-core/<version> .NET_Core/… OS/…").
    "dotnet": "aws-sdk-dotnet-coreclr/3.7.400.4 aws-sdk-dotnet-core/3.7.400.4 "
              ".NET_Core/8.0.6 OS/Linux_6.1.0-18-cloud-amd64 ClientAsync",
    # aws-sdk-ruby: InstanceProfileCredentials sends 'User-Agent' => "aws-sdk-ruby3/<core gem>".
    "ruby": "aws-sdk-ruby3/3.201.3",
    # aws-sdk-php: InstanceProfileProvider sends Aws\default_user_agent()
    # ("aws-sdk-php/<version> OS/… lang/php#… GuzzleHttp/7").
    "php": "aws-sdk-php/3.316.2 OS/Linux#6.1.0 lang/php#8.2.20 GuzzleHttp/7",
    # aws-sdk-cpp: the EC2 metadata client's ComputeUserAgentString()
    # ("aws-sdk-cpp/<version> <os>/<version> <arch> <compiler>/<version>").
    "cpp": "aws-sdk-cpp/1.11.350 Linux/6.1.0-18-cloud-amd64 x86_64 GCC/12.2.0",
    # aws-sdk-js v2: AWS.MetadataService sends the SDK's user agent
    # ("aws-sdk-nodejs/<version> <platform>/<node version> …").
    "js_v2": "aws-sdk-nodejs/2.1691.0 linux/v20.11.1 exec-env/AWS_ECS_EC2",
}


def call(host, port, method, path, headers):
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        # http.client adds Host and Accept-Encoding, never a User-Agent of its own.
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        return response.status, body
    finally:
        conn.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdk", required=True, choices=sorted(USER_AGENTS))
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    agent = USER_AGENTS[args.sdk]
    calls = errors = 0

    def metadata(method, path, headers):
        nonlocal calls, errors
        calls += 1
        status, body = call(args.host, args.port, method, path, {"User-Agent": agent, **headers})
        errors += not 200 <= status < 300
        return body

    token = metadata("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
    session = {"X-aws-ec2-metadata-token": token.decode()}
    role = metadata("GET", ROLE_LIST_PATH, session).decode().strip()
    metadata("GET", ROLE_LIST_PATH + role, session)
    print(json.dumps({"sdk": args.sdk, "user_agent": agent, "calls": calls, "errors": errors}),
          flush=True)


if __name__ == "__main__":
    main()
