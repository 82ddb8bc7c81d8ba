//! Real AWS SDK for Rust credential providers against credwatch's fake endpoints.
//!
//! `credwatch-rust-sdk-client imds|ecs API_URL CALLS` makes CALLS STS GetCallerIdentity calls
//! against the fake API at API_URL, signed with credentials from the SDK's IMDS provider (IMDS at
//! `$AWS_EC2_METADATA_SERVICE_ENDPOINT`) or its ECS container provider
//! (`$AWS_CONTAINER_CREDENTIALS_FULL_URI`), through the SDK's own identity cache, and prints one
//! JSON line: {"calls": N, "errors": E}.
//!
//! Nothing else can be reached: the provider is set explicitly (no default chain, so no other
//! source is tried), the endpoints are the ones given, plain HTTP only.
use std::process::ExitCode;

use aws_config::{
    BehaviorVersion, Region, ecs::EcsCredentialsProvider, imds,
    provider_config::ProviderConfig,
};
use aws_sdk_sts::config::SharedCredentialsProvider;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [provider, api_url, calls] = &args[..] else {
        eprintln!("usage: credwatch-rust-sdk-client imds|ecs API_URL CALLS");
        return ExitCode::from(2);
    };
    let Ok(calls) = calls.parse::<u32>() else {
        eprintln!("CALLS must be a number");
        return ExitCode::from(2);
    };
    let http = aws_smithy_http_client::Builder::new().build_http();
    let providers = ProviderConfig::without_region().with_http_client(http.clone());
    let credentials = match provider.as_str() {
        "imds" => SharedCredentialsProvider::new(
            imds::credentials::ImdsCredentialsProvider::builder()
                .imds_client(imds::Client::builder().configure(&providers).build())
                .build(),
        ),
        "ecs" => SharedCredentialsProvider::new(
            EcsCredentialsProvider::builder().configure(&providers).build(),
        ),
        other => {
            eprintln!("unknown provider {other}");
            return ExitCode::from(2);
        }
    };
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(api_url.as_str())
        .http_client(http)
        .credentials_provider(credentials)
        .load()
        .await;
    let sts = aws_sdk_sts::Client::new(&config);
    let mut errors = 0;
    for _ in 0..calls {
        if let Err(e) = sts.get_caller_identity().send().await {
            eprintln!("call failed: {e:?}");
            errors += 1;
        }
    }
    println!("{{\"calls\": {calls}, \"errors\": {errors}}}");
    ExitCode::SUCCESS
}
