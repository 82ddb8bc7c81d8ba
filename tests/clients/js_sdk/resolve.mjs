// Resolves credentials once through the AWS SDK for JavaScript v3's fromInstanceMetadata (IMDS
// at $AWS_EC2_METADATA_SERVICE_ENDPOINT) and prints {"resolved": true|false}.
import { fromInstanceMetadata } from "@aws-sdk/credential-providers";

let resolved = false;
try {
  const credentials = await fromInstanceMetadata()();
  resolved = Boolean(credentials.accessKeyId);
} catch (err) {
  console.error(`resolving failed: ${err}`);
}
console.log(JSON.stringify({ resolved }));
