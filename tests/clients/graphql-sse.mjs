// The graphql-sse reference client against TaskNest, in the mode MODE names ("distinct"
// connections or "single" connection): a query, a mutation, and a subscription receiving the
// events of mutations made meanwhile; it keeps the last seq and would send it as
// Last-Event-ID on a reconnect. Env: TASKNEST_HTTP, TOKEN, PROJECT, TASK, MODE. Prints
// {"me", "renamed", "seqs", "titles"}.
import { createClient } from 'graphql-sse';

const [HTTP, TOKEN, PROJECT, TASK] = ['TASKNEST_HTTP', 'TOKEN', 'PROJECT', 'TASK'].map((name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
});

let lastSeq = null;
const client = createClient({
  url: HTTP,
  singleConnection: process.env.MODE === 'single',
  retryAttempts: 3,
  // Called on every (re)connect: resume where the stream broke.
  headers: () => ({
    authorization: `Bearer ${TOKEN}`,
    ...(lastSeq === null ? {} : { 'last-event-id': String(lastSeq) }),
  }),
});

async function one(query, variables = {}) {
  for await (const result of client.iterate({ query, variables })) {
    if (result.errors) throw new Error(JSON.stringify(result.errors));
    return result.data;
  }
  throw new Error('no result');
}

const me = (await one('{ me { id } }')).me.id;
const renamed = (await one(
  'mutation($id: ID!, $t: String!) { updateTask(id: $id, patch: { title: $t }) { ... on TaskUpdated { task { title } } } }',
  { id: TASK, t: 'renamed over SSE' },
)).updateTask.task.title;

const seqs = [];
const titles = [];
const events = client.iterate({
  query: 'subscription($p: ID!) { projectEvents(projectId: $p) { seq task { title } } }',
  variables: { p: PROJECT },
});
const collected = (async () => {
  for await (const result of events) {
    if (result.errors) throw new Error(JSON.stringify(result.errors));
    lastSeq = result.data.projectEvents.seq;
    seqs.push(lastSeq);
    titles.push(result.data.projectEvents.task.title);
    if (seqs.length === 3) break;
  }
})();
await new Promise((r) => setTimeout(r, 500));
for (const title of ['a', 'b', 'c']) {
  await one('mutation($id: ID!, $t: String!) { updateTask(id: $id, patch: { title: $t }) { __typename } }', { id: TASK, t: title });
}
await Promise.race([collected, new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${seqs}`)), 15000))]);
console.log(JSON.stringify({ me, renamed, seqs, titles }));
client.dispose();
process.exit(0);
