// A webhook receiver in Node (18+, no dependencies): verifies Standard Webhooks signatures.
//
//   node examples/receiver.mjs --port 8001 --secret whsec_...
//
// The same checks as the `standardwebhooks` npm package (which you can use instead:
// `new Webhook(secret).verify(rawBody, headers)`): HMAC-SHA256 over "<id>.<timestamp>.<raw body>"
// keyed by the base64-decoded part of the secret, compared in constant time against each
// space-separated "v1,<base64>" signature, and a timestamp within five minutes.
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "8001" },
    host: { type: "string", default: "0.0.0.0" },
    secret: { type: "string" },
  },
});
if (!values.secret) {
  console.error("--secret whsec_... is required (GET /api/webhook-secret/)");
  process.exit(2);
}
const key = Buffer.from(values.secret.replace(/^whsec_/, ""), "base64");
const TOLERANCE_SECONDS = 5 * 60;
const seen = new Set(); // webhook-ids already processed: the same event can arrive twice

export function verify(rawBody, headers) {
  const id = headers["webhook-id"];
  const timestamp = headers["webhook-timestamp"];
  const signatures = headers["webhook-signature"];
  if (!id || !timestamp || !signatures) return false;
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > TOLERANCE_SECONDS) return false;
  const expected = createHmac("sha256", key)
    .update(Buffer.concat([Buffer.from(`${id}.${timestamp}.`), rawBody]))
    .digest();
  return signatures.split(" ").some((versioned) => {
    const [version, signature] = versioned.split(",");
    if (version !== "v1" || !signature) return false;
    const given = Buffer.from(signature, "base64");
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}

const server = createServer((request, response) => {
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    const rawBody = Buffer.concat(chunks); // verify the raw bytes, before any JSON parsing
    if (!verify(rawBody, request.headers)) {
      response.writeHead(401, { "Content-Type": "application/json" }).end('{"error":"bad signature"}');
      return;
    }
    const id = request.headers["webhook-id"];
    if (!seen.has(id)) {
      seen.add(id);
      const event = JSON.parse(rawBody.toString("utf8"));
      if (event.type.startsWith("job.")) {
        console.log(`${event.timestamp} ${event.type} job ${event.data.id} status ${event.data.status}`);
      } else {
        // an endpoint's webhook.test or endpoint.disabled: about the endpoint, not a job
        console.log(`${event.timestamp} ${event.type} endpoint ${event.data.endpoint_id ?? event.data.id}`);
      }
    }
    response.writeHead(200, { "Content-Type": "application/json" }).end('{"ok":true}');
  });
});
server.on("connection", (socket) => socket.setNoDelay(true));
server.listen(Number(values.port), values.host, () => {
  const { address, port } = server.address();
  console.log(`Listening on http://${address}:${port}/`);
});
