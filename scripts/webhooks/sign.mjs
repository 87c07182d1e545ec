// Signs a GitHub delivery with GitHub's own @octokit/webhooks-methods, for
// tests/gateway/webhook.rs. Reads {"secret", "body"} on stdin, prints {"headers": {...}}.
import { sign } from "@octokit/webhooks-methods";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const request = JSON.parse(input);
const signature = await sign(request.secret, request.body);
process.stdout.write(JSON.stringify({ headers: { "x-hub-signature-256": signature }, query: "" }));
