// The AWS SDK for JavaScript v3 (from npm) against credwatch's fake endpoints.
//
//   node client.mjs imds|container|http API_URL CALLS
//
// Makes CALLS STS GetCallerIdentity calls against the fake API, signed with credentials from
// fromInstanceMetadata (IMDS at $AWS_EC2_METADATA_SERVICE_ENDPOINT), fromContainerMetadata or
// fromHttp ($AWS_CONTAINER_CREDENTIALS_FULL_URI), through the client's own credential cache
// (refreshed 5 minutes before expiry), and prints one JSON line {"calls": N, "errors": E}.
// The provider is given explicitly: no other credential source is ever tried.
import { STSClient, GetCallerIdentityCommand } from "@aws-sdk/client-sts";
import {
  fromContainerMetadata,
  fromHttp,
  fromInstanceMetadata,
} from "@aws-sdk/credential-providers";

const [provider, apiUrl, callsArg] = process.argv.slice(2);
const calls = Number(callsArg);
const providers = {
  imds: () => fromInstanceMetadata(),
  container: () => fromContainerMetadata(),
  http: () => fromHttp({}),
};
if (!(provider in providers) || !apiUrl || !Number.isInteger(calls)) {
  console.error("usage: node client.mjs imds|container|http API_URL CALLS");
  process.exit(2);
}
const client = new STSClient({
  region: "us-east-1",
  endpoint: apiUrl,
  credentials: providers[provider](),
  maxAttempts: 1,
});
let errors = 0;
for (let i = 0; i < calls; i++) {
  try {
    await client.send(new GetCallerIdentityCommand({}));
  } catch (err) {
    console.error(`call failed: ${err}`);
    errors += 1;
  }
}
client.destroy();
console.log(JSON.stringify({ calls, errors }));
