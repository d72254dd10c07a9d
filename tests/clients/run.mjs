// Apollo Client (GraphQLWsLink) and urql (@urql/core with graphql-ws) against a running
// TaskNest: a query, a mutation with an optimistic response, a subscription receiving the
// mutation's event, automatic persisted queries, and a reconnect after the server closed
// the socket. Started by the Rust test in `tests/api/clients.rs` with:
//   TASKNEST_HTTP  http://127.0.0.1:PORT/graphql
//   TASKNEST_WS    ws://127.0.0.1:PORT/graphql
//   USER_ID        alice's user id (each test run has its own)
//   TOKEN          a token for alice, valid for an hour
//   SHORT_TOKEN    a token for alice that expires within seconds (the server then closes
//                  the socket with 4403 and the client must reconnect with a fresh one)
// Exits 0 when every check passed; prints what failed otherwise.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

import * as apollo from '@apollo/client/core/index.js';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions/index.js';
import { createPersistedQueryLink } from '@apollo/client/link/persisted-queries/index.js';
import { getMainDefinition } from '@apollo/client/utilities/index.js';
import { Client as UrqlClient, cacheExchange, fetchExchange, subscriptionExchange, gql as ugql } from '@urql/core';
import { persistedExchange } from '@urql/exchange-persisted';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const { ApolloClient, InMemoryCache, HttpLink, split, gql, ApolloLink } = apollo;
const HTTP = required('TASKNEST_HTTP');
const WS = required('TASKNEST_WS');
const TOKEN = required('TOKEN');
const SHORT_TOKEN = required('SHORT_TOKEN');
const USER_ID = required('USER_ID');

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set`);
    process.exit(2);
  }
  return value;
}

const sha256 = (text) => createHash('sha256').update(text).digest('hex');

/** Resolves with the first value `take` accepts among an observable's next values. */
function waitFor(label, subscribe, take, ms = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${label}`)), ms);
    const stop = subscribe((value) => {
      const taken = take(value);
      if (taken !== undefined) {
        clearTimeout(timer);
        Promise.resolve().then(() => stop());
        resolve(taken);
      }
    }, (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

const PROJECT = gql`mutation NewProject($name: String!) { createProject(input: { name: $name }) { id name } }`;
const CREATE_TASK = gql`mutation NewTask($p: ID!, $t: String!) { createTask(input: { projectId: $p, title: $t }) { id title version } }`;
const TASK = gql`query OneTask($id: ID!) { task(id: $id) { id title version } }`;
const RENAME = gql`mutation Rename($id: ID!, $t: String!, $v: Int, $cmid: String) {
  updateTask(id: $id, patch: { title: $t }, baseVersion: $v, clientMutationId: $cmid) {
    __typename
    ... on TaskUpdated { task { id title version } }
    ... on TaskConflict { reason conflictingFields }
  }
}`;
const EVENTS = gql`subscription Events($p: ID!, $after: Int) {
  projectEvents(projectId: $p, after: $after) { seq kind taskId clientMutationId task { id title version } }
}`;
const ME = gql`query Me { me { id name } }`;

async function apolloChecks() {
  let wsToken = SHORT_TOKEN;
  const closes = [];
  const wsClient = createClient({
    url: WS,
    webSocketImpl: WebSocket,
    // A fresh token on every (re)connection, as apps do with a refreshed session.
    connectionParams: () => {
      const token = wsToken;
      wsToken = TOKEN;
      return { authorization: `Bearer ${token}` };
    },
    retryAttempts: 5,
    retryWait: async () => new Promise((r) => setTimeout(r, 200)),
    shouldRetry: () => true,
    on: { closed: (event) => closes.push(event.code) },
  });
  const auth = new ApolloLink((operation, forward) => {
    operation.setContext({ headers: { authorization: `Bearer ${TOKEN}` } });
    return forward(operation);
  });
  const http = ApolloLink.from([
    auth,
    createPersistedQueryLink({ sha256, useGETForHashedQueries: true }),
    new HttpLink({ uri: HTTP }),
  ]);
  const link = split(
    ({ query }) => {
      const def = getMainDefinition(query);
      return def.kind === 'OperationDefinition' && def.operation === 'subscription';
    },
    new GraphQLWsLink(wsClient),
    http,
  );
  const client = new ApolloClient({ link, cache: new InMemoryCache() });

  // A query (sent as a persisted query: hash first over GET, then the full query).
  const me = await client.query({ query: ME });
  assert.equal(me.data.me.id, USER_ID);

  const project = (await client.mutate({ mutation: PROJECT, variables: { name: 'Apollo board' } })).data.createProject;
  const task = (await client.mutate({ mutation: CREATE_TASK, variables: { p: project.id, t: 'first' } })).data.createTask;

  // A subscription from the log's start: it replays the task's creation, then goes live.
  const seen = new Map();
  const events = client.subscribe({ query: EVENTS, variables: { p: project.id, after: 0 } });
  let onEvent = () => {};
  const subscription = events.subscribe({
    next: ({ data }) => {
      const event = data.projectEvents;
      if (!seen.has(event.seq)) seen.set(event.seq, event);
      onEvent(event);
    },
    error: (err) => console.error('subscription error', err),
  });
  const nextEvent = (label, test) => new Promise((resolve, reject) => {
    const found = [...seen.values()].find(test);
    if (found) return resolve(found);
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${label}`)), 10000);
    onEvent = (event) => {
      if (test(event)) {
        clearTimeout(timer);
        resolve(event);
      }
    };
  });
  await nextEvent('the TASK_CREATED replay', (e) => e.kind === 'TASK_CREATED');

  // A mutation with an optimistic response: the cache shows it at once, then the server's.
  const watched = [];
  const watch = client.watchQuery({ query: TASK, variables: { id: task.id } });
  const watching = watch.subscribe(({ data }) => data && watched.push(data.task.title));
  await waitFor('the watched task', (next) => {
    const s = watch.subscribe(({ data }) => next(data));
    return () => s.unsubscribe();
  }, (data) => (data?.task ? true : undefined));
  const renamed = await client.mutate({
    mutation: RENAME,
    variables: { id: task.id, t: 'renamed by Apollo', v: task.version, cmid: 'apollo-1' },
    optimisticResponse: {
      updateTask: {
        __typename: 'TaskUpdated',
        task: { __typename: 'Task', id: task.id, title: 'renamed by Apollo', version: task.version + 1 },
      },
    },
  });
  assert.equal(renamed.data.updateTask.__typename, 'TaskUpdated');
  assert.equal(renamed.data.updateTask.task.version, task.version + 1);
  assert.ok(watched.includes('renamed by Apollo'), `the cache showed the change: ${watched}`);
  watching.unsubscribe();

  // The subscription receives the mutation's event, tagged with its clientMutationId.
  const event = await nextEvent('the rename event', (e) => e.clientMutationId === 'apollo-1');
  assert.equal(event.kind, 'TASK_UPDATED');
  assert.equal(event.task.title, 'renamed by Apollo');

  // Reconnect: the first connection's token expires, the server closes it with 4403, and
  // the client reconnects with a fresh token and resubscribes. Changes made meanwhile
  // arrive: a client resumes from `after`, so nothing is missed (duplicates of what it
  // already saw are skipped by seq).
  await waitFor('the server closing the expired connection', (next) => {
    const timer = setInterval(() => next(closes.length), 100);
    return () => clearInterval(timer);
  }, (n) => (n > 0 ? true : undefined), 15000);
  assert.equal(closes[0], 4403, `closed with ${closes}`);
  for (let i = 0; i < 3; i += 1) {
    await client.mutate({ mutation: RENAME, variables: { id: task.id, t: `after reconnect ${i}`, cmid: `apollo-r${i}` } });
  }
  await nextEvent('the events after the reconnect', (e) => e.clientMutationId === 'apollo-r2');
  const seqs = [...seen.keys()].sort((a, b) => a - b);
  assert.deepEqual(seqs, seqs.map((_, i) => i + 1), `gap-free: ${seqs}`);
  subscription.unsubscribe();
  await wsClient.dispose();
  return project.id;
}

async function urqlChecks(projectId) {
  const ws = createClient({
    url: WS,
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${TOKEN}` },
  });
  const client = new UrqlClient({
    url: HTTP,
    fetchOptions: () => ({ headers: { authorization: `Bearer ${TOKEN}` } }),
    exchanges: [
      cacheExchange,
      persistedExchange({ preferGetForPersistedQueries: true, generateHash: async (q) => sha256(q) }),
      fetchExchange,
      subscriptionExchange({
        forwardSubscription(request) {
          const input = { ...request, query: request.query || '' };
          return {
            subscribe(sink) {
              const unsubscribe = ws.subscribe(input, sink);
              return { unsubscribe };
            },
          };
        },
      }),
    ],
  });
  const me = await client.query(ugql`query UrqlMe { me { id } }`, {}).toPromise();
  assert.equal(me.error, undefined, `${me.error}`);
  assert.equal(me.data.me.id, USER_ID);

  const created = await client
    .mutation(ugql`mutation UrqlTask($p: ID!, $t: String!) { createTask(input: { projectId: $p, title: $t }) { id version } }`, { p: projectId, t: 'from urql' })
    .toPromise();
  assert.equal(created.error, undefined, `${created.error}`);
  const task = created.data.createTask;

  const received = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('urql: no event')), 10000);
    const { unsubscribe } = client
      .subscription(ugql`subscription UrqlEvents($p: ID!) { projectEvents(projectId: $p) { seq kind clientMutationId task { title } } }`, { p: projectId })
      .subscribe((result) => {
        if (result.error) {
          clearTimeout(timer);
          reject(result.error);
          return;
        }
        const event = result.data?.projectEvents;
        if (event?.clientMutationId === 'urql-1') {
          clearTimeout(timer);
          unsubscribe();
          resolve(event);
        }
      });
  });
  // Give the live subscription a moment to be registered before the change.
  await new Promise((r) => setTimeout(r, 300));
  const renamed = await client
    .mutation(ugql`mutation UrqlRename($id: ID!, $t: String!, $cmid: String) { updateTask(id: $id, patch: { title: $t }, clientMutationId: $cmid) { __typename } }`, { id: task.id, t: 'renamed by urql', cmid: 'urql-1' })
    .toPromise();
  assert.equal(renamed.error, undefined, `${renamed.error}`);
  const event = await received;
  assert.equal(event.kind, 'TASK_UPDATED');
  assert.equal(event.task.title, 'renamed by urql');
  await ws.dispose();
}

try {
  const projectId = await apolloChecks();
  console.log('apollo: query, optimistic mutation, subscription, persisted query, reconnect: ok');
  await urqlChecks(projectId);
  console.log('urql: query, mutation, subscription, persisted query: ok');
  process.exit(0);
} catch (err) {
  console.error('FAILED:', err);
  process.exit(1);
}
