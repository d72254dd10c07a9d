// Verifies TaskNest's webhook deliveries with the `standardwebhooks` library, as integrators
// do. Reads [{secret, id, timestamp, signature, body}] as JSON on stdin (the raw requests a
// Rust test's receiver recorded) and prints [{id, ok, type, seq, error}] as JSON.
import { Webhook } from "standardwebhooks";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map(({ secret, id, timestamp, signature, body }) => {
  try {
    const payload = new Webhook(secret).verify(body, {
      "webhook-id": id,
      "webhook-timestamp": timestamp,
      "webhook-signature": signature,
    });
    return { id, ok: true, type: payload.type, seq: payload.seq };
  } catch (err) {
    return { id, ok: false, error: String(err) };
  }
});
console.log(JSON.stringify(results));
