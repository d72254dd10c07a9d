// A real browser on the playground: headless Chromium (the Debian package, driven by
// puppeteer-core) opens GET / with every request outside 127.0.0.1 refused, runs a query in
// GraphiQL, starts a projectEvents subscription in the page (graphql-ws), renames the task
// over HTTP and waits for the event in the result pane. Env: TASKNEST_URL, TOKEN, PROJECT,
// TASK, CHROMIUM, SCREENSHOT. Prints {"me", "event", "outside"}.
import puppeteer from 'puppeteer-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};
const [BASE, TOKEN, PROJECT, TASK] = ['TASKNEST_URL', 'TOKEN', 'PROJECT', 'TASK'].map(env);

const browser = await puppeteer.launch({
  executablePath: env('CHROMIUM'),
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const outside = [];
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 800 });
  await page.setRequestInterception(true);
  page.on('request', (request) => {
    const url = new URL(request.url());
    if (['http:', 'https:', 'ws:', 'wss:'].includes(url.protocol) && url.hostname !== '127.0.0.1') {
      outside.push(request.url());
      request.abort();
    } else {
      request.continue();
    }
  });

  const open = async (query) => {
    await page.goto(`${BASE}?query=${encodeURIComponent(query)}`, { waitUntil: 'load' });
    await page.waitForSelector('.graphiql-execute-button', { timeout: 15000 });
    await page.click('.graphiql-execute-button');
  };
  const resultContains = (text) =>
    page.waitForFunction(
      (t) => (document.querySelector('.result-window')?.innerText || '').includes(t),
      { timeout: 15000 },
      text,
    );

  await open('{ me { id name } }');
  await resultContains('"me"');
  const me = await page.$eval('.result-window', (el) => el.innerText);

  await open(`subscription { projectEvents(projectId: "${PROJECT}") { seq task { title } } }`);
  await new Promise((r) => setTimeout(r, 1500));
  const rename = await fetch(new URL('/graphql', BASE), {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify({
      query: 'mutation($id: ID!) { updateTask(id: $id, patch: { title: "seen in the browser" }) { __typename } }',
      variables: { id: TASK },
    }),
  });
  if (!rename.ok) throw new Error(`rename: ${rename.status}`);
  await resultContains('seen in the browser');
  const event = await page.$eval('.result-window', (el) => el.innerText);
  await page.screenshot({ path: env('SCREENSHOT') });
  console.log(JSON.stringify({ me, event, outside }));
} finally {
  await browser.close();
}
