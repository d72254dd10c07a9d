// The graphql-sse client (distinct connections) following projectEvents through a cut
// connection: it remembers the last seq and sends it as Last-Event-ID whenever it
// reconnects. Env: TASKNEST_HTTP, TOKEN, PROJECT, AFTER, COUNT. Prints "subscribed" once
// started, then {"seqs": [...], "connects": n} after COUNT events.
import { createClient } from 'graphql-sse';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};
const [HTTP, TOKEN, PROJECT] = ['TASKNEST_HTTP', 'TOKEN', 'PROJECT'].map(env);
const AFTER = Number(env('AFTER'));
const COUNT = Number(env('COUNT'));

let lastSeq = null;
let connects = 0;
const client = createClient({
  url: HTTP,
  singleConnection: false,
  retryAttempts: 10,
  retry: () => new Promise((r) => setTimeout(r, 200)),
  headers: () => {
    connects += 1;
    return {
      authorization: `Bearer ${TOKEN}`,
      ...(lastSeq === null ? {} : { 'last-event-id': String(lastSeq) }),
    };
  },
});

const seqs = [];
const timer = setTimeout(() => {
  console.error(`timed out after ${seqs.length} events`);
  process.exit(1);
}, 60000);
console.log('subscribed');
for await (const result of client.iterate({
  query: 'subscription($p: ID!, $a: Int) { projectEvents(projectId: $p, after: $a) { seq } }',
  variables: { p: PROJECT, a: AFTER },
})) {
  if (result.errors) throw new Error(JSON.stringify(result.errors));
  lastSeq = result.data.projectEvents.seq;
  seqs.push(lastSeq);
  if (seqs.length >= COUNT) break;
}
clearTimeout(timer);
console.log(JSON.stringify({ seqs, connects }));
client.dispose();
process.exit(0);
