// Apollo Client with a plain HttpLink (no WebSocket link) subscribing to projectEvents over
// multipart HTTP. Env: TASKNEST_HTTP, TOKEN, PROJECT, TASK. Renames the task three times
// over plain HTTP once subscribed, and prints {"seqs": [...], "titles": [...]} when the
// three events have arrived.
import * as apollo from '@apollo/client/core/index.js';

const { ApolloClient, InMemoryCache, HttpLink, gql } = apollo;
const [HTTP, TOKEN, PROJECT, TASK] = ['TASKNEST_HTTP', 'TOKEN', 'PROJECT', 'TASK'].map((name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
});

const client = new ApolloClient({
  link: new HttpLink({ uri: HTTP, headers: { authorization: `Bearer ${TOKEN}` } }),
  cache: new InMemoryCache(),
});
const EVENTS = gql`subscription Events($p: ID!) { projectEvents(projectId: $p) { seq kind task { title } } }`;
const RENAME = gql`mutation Rename($id: ID!, $t: String!) { updateTask(id: $id, patch: { title: $t }) { __typename } }`;

const seqs = [];
const titles = [];
const done = new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error(`timed out with ${JSON.stringify(seqs)}`)), 15000);
  const subscription = client.subscribe({ query: EVENTS, variables: { p: PROJECT } }).subscribe({
    next: ({ data, errors }) => {
      if (errors) return reject(new Error(JSON.stringify(errors)));
      seqs.push(data.projectEvents.seq);
      titles.push(data.projectEvents.task.title);
      if (seqs.length === 3) {
        clearTimeout(timer);
        subscription.unsubscribe();
        resolve();
      }
    },
    error: (err) => reject(err),
  });
});
await new Promise((r) => setTimeout(r, 500));
for (const title of ['one', 'two', 'three']) {
  await client.mutate({ mutation: RENAME, variables: { id: TASK, t: title } });
}
await done;
console.log(JSON.stringify({ seqs, titles }));
process.exit(0);
