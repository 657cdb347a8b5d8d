// End-to-end test of the web chat page in headless Chromium, against real `switchyard api`
// servers started by scripts/test-web.sh:
//   SY_MAIN_URL (+ SY_MAIN_BACKEND: hf-candle on the real model, or echo when that plugin is absent)
//   SY_ECHO_URL (the echo backend with a delay: Stop, Markdown/injection, <think>, tools, images)
//   SY_KEY_URL + SY_API_KEY (echo behind --api-key: the key prompt)
// A screenshot after a reply is saved to $ARTIFACTS_DIR/webchat.png.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set; run scripts/test-web.sh`);
  return v;
};
const MAIN_URL = env('SY_MAIN_URL');
const MAIN_BACKEND = env('SY_MAIN_BACKEND');
const ECHO_URL = env('SY_ECHO_URL');
const KEY_URL = env('SY_KEY_URL');
const API_KEY = env('SY_API_KEY');
const MODELS_URL = env('SY_MODELS_URL');
// hf-candle on the tiny Qwen2-VL fixture (set when the plugin is built).
const VLM_URL = process.env.SY_VLM_URL || '';
const VLM_IMAGE = process.env.SY_VLM_IMAGE || '';
const ARTIFACTS = process.env.ARTIFACTS_DIR || 'artifacts';
const REAL = MAIN_BACKEND !== 'echo';
// The real model on a couple of CPU cores is much slower than echo.
const REPLY_TIMEOUT = REAL ? 180_000 : 30_000;

console.log(`# main server: ${MAIN_BACKEND} at ${MAIN_URL}${REAL ? ' (real model)' : ' (echo: libhf_candle.so not built)'}`);

let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
});

after(async () => {
  if (browser) await browser.close();
});

/** Opens a fresh page (own storage) on `url`, recording chat requests and page errors. */
async function openPage(url, { waitInfo = true } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 820 } });
  const page = await context.newPage();
  const requests = [];
  const errors = [];
  page.on('request', (r) => {
    if (r.method() === 'POST' && r.url().endsWith('/v1/chat/completions')) {
      requests.push({ body: JSON.parse(r.postData() || 'null'), headers: r.headers() });
    }
  });
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    // Failed requests (the 400/401 the test provokes) are logged by the browser; not page bugs.
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) errors.push(`console: ${m.text()}`);
  });
  await page.goto(url);
  if (waitInfo) await page.waitForFunction(() => window.switchyardChat && window.switchyardChat.state.info);
  return { context, page, requests, errors };
}

async function waitIdle(page, timeout = REPLY_TIMEOUT) {
  await page.waitForFunction(() => !window.switchyardChat.state.busy, null, { timeout });
}

/** Clicks `selector` (Send by default) and waits until the reply it starts has finished. */
async function clickAndWait(page, selector = '#send', timeout = REPLY_TIMEOUT) {
  const done = await page.evaluate(() => window.switchyardChat.state.done);
  await page.click(selector);
  await page.waitForFunction((d) => window.switchyardChat.state.done > d && !window.switchyardChat.state.busy, done, { timeout });
}

async function send(page, text, timeout = REPLY_TIMEOUT) {
  await page.fill('#input', text);
  await clickAndWait(page, '#send', timeout);
}

const lastAssistant = (page) => page.locator('.msg.assistant').last();

/** Starts sampling the last assistant message's text length on every animation frame. */
async function startSampling(page) {
  await page.evaluate(() => {
    window.__samples = [];
    const tick = () => {
      const all = document.querySelectorAll('.msg.assistant .content');
      const el = all[all.length - 1];
      const n = el ? el.textContent.length : -1;
      const s = window.__samples;
      if (!s.length || s[s.length - 1] !== n) s.push(n);
      if (!window.__stopSampling) requestAnimationFrame(tick);
    };
    window.__stopSampling = false;
    requestAnimationFrame(tick);
  });
}

async function stopSampling(page) {
  return page.evaluate(() => { window.__stopSampling = true; return window.__samples; });
}

describe(`main server (${MAIN_BACKEND})`, () => {
  let ctx;
  before(async () => {
    ctx = await openPage(MAIN_URL);
    // Short replies keep the real model quick.
    await ctx.page.fill('#max-tokens', REAL ? '48' : '64');
  });
  after(async () => {
    assert.deepEqual(ctx.errors, [], 'no script errors on the page');
    await ctx.context.close();
  });

  test('shows the backend and model from /v1/info', async () => {
    const { page } = ctx;
    assert.equal(await page.textContent('#info-backend'), MAIN_BACKEND);
    const model = await page.textContent('#info-model');
    assert.ok(model && model !== '…', `model shown: ${model}`);
  });

  test('streams a reply that grows across several frames, then shows tokens/s', async () => {
    const { page, requests } = ctx;
    await startSampling(page);
    const prompt = REAL ? 'Write a few sentences about steam trains.'
      : 'one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen';
    await send(page, prompt);
    const samples = (await stopSampling(page)).filter((n) => n > 0);
    const text = (await lastAssistant(page).locator('.content').textContent()).trim();
    console.log(`# reply (${samples.length} distinct lengths while streaming): ${JSON.stringify(text.slice(0, 160))}`);
    assert.ok(text.length > 0, 'a reply appeared');
    assert.ok(samples.length >= 3, `the text grew in pieces: lengths seen ${JSON.stringify(samples)}`);
    for (let k = 1; k < samples.length; k += 1) assert.ok(samples[k] >= samples[k - 1], `never shrinks: ${samples}`);
    if (!REAL) assert.equal(text, prompt.split(' ').reverse().join(' '));
    assert.equal(requests.length, 1);
    const body = requests[0].body;
    assert.equal(body.stream, true);
    assert.equal(body.messages.at(-1).content, prompt);
    const meta = await lastAssistant(page).locator('.meta').textContent();
    assert.match(meta, /\d+ tokens? · [\d.]+ tok\/s/, `reply meta: ${meta}`);
    assert.match(await page.textContent('#info-speed'), /tok\/s/);
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    const shot = path.join(ARTIFACTS, 'webchat.png');
    await page.screenshot({ path: shot });
    console.log(`# screenshot: ${shot}`);
  });

  test('sends the settings: temperature, seed, system prompt and the history', async () => {
    const { page, requests } = ctx;
    await page.fill('#temperature', '0.3');
    await page.fill('#seed', '7');
    await page.fill('#system-prompt', 'You are terse.');
    await page.fill('#max-tokens', REAL ? '16' : '64');
    const n = requests.length;
    await send(page, REAL ? 'And about diesel trains?' : 'alpha beta gamma');
    assert.equal(requests.length, n + 1);
    const body = requests.at(-1).body;
    assert.equal(body.temperature, 0.3);
    assert.equal(body.seed, 7);
    assert.equal(body.max_tokens, REAL ? 16 : 64);
    assert.deepEqual(body.messages[0], { role: 'system', content: 'You are terse.' });
    // system, user, assistant (the first reply), user
    assert.deepEqual(body.messages.map((m) => m.role), ['system', 'user', 'assistant', 'user']);
    assert.ok(body.messages[2].content.length > 0, 'the first reply is sent back as history');
    assert.equal(await page.locator('.msg.assistant').count(), 2);
  });

  test('renders the server error body for an out-of-range top_p', async () => {
    const { page, requests } = ctx;
    await page.fill('#top-p', '1.5');
    await send(page, 'this request is refused');
    assert.equal(requests.at(-1).body.top_p, 1.5);
    const err = page.locator('.msg.error').last();
    await err.waitFor();
    const text = await err.textContent();
    assert.match(text, /Error 400/);
    assert.match(text, /top_p/);
    assert.match(text, /out of range/);
    assert.match(text, /invalid_request_error/);
    await page.fill('#top-p', '0.9');
  });

  test('clears the conversation', async () => {
    const { page, requests } = ctx;
    await page.click('#clear');
    assert.equal(await page.locator('.msg').count(), 0);
    assert.ok(await page.isVisible('#empty'));
    assert.equal(await page.evaluate(() => sessionStorage.getItem('switchyard.chat')), '[]');
    await send(page, REAL ? 'Hi' : 'after clear');
    assert.deepEqual(requests.at(-1).body.messages.map((m) => m.role), ['system', 'user'], 'no old history after Clear');
  });
});

describe('echo server (controls, rendering, safety)', () => {
  let ctx;
  before(async () => {
    ctx = await openPage(ECHO_URL);
  });
  after(async () => {
    assert.deepEqual(ctx.errors, [], 'no script errors on the page');
    await ctx.context.close();
  });

  test('Stop cancels a long reply', async () => {
    const { page } = ctx;
    const words = Array.from({ length: 200 }, (_, k) => `w${k}`);
    await page.fill('#input', `!say ${words.join(' ')}`);
    await page.click('#send');
    await page.waitForFunction(() => {
      const all = document.querySelectorAll('.msg.assistant .content');
      return all.length && all[all.length - 1].textContent.length > 10;
    });
    assert.equal(await page.isEnabled('#stop'), true);
    await page.click('#stop');
    await waitIdle(page, 5000);
    const len1 = (await lastAssistant(page).locator('.content').textContent()).length;
    await page.waitForTimeout(600);
    const text = await lastAssistant(page).locator('.content').textContent();
    assert.equal(text.length, len1, 'nothing arrives after Stop');
    assert.ok(text.split(' ').length < words.length, `stopped early (${text.split(' ').length} words)`);
    assert.match(await lastAssistant(page).locator('.meta').textContent(), /stopped/);
    assert.equal(await page.isEnabled('#stop'), false);
    // The server freed the slot: the next request works.
    await send(page, 'still here');
    assert.equal((await lastAssistant(page).locator('.content').textContent()).trim(), 'here still');
  });

  test('renders Markdown and code blocks, and model output never becomes HTML', async () => {
    const { page } = ctx;
    await page.click('#clear');
    const md = [
      '!say # Title',
      'Some **bold**, *em* and `inline <b>code</b>` text.',
      '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script>',
      '',
      '- item [bad](javascript:window.__pwned=3)',
      '- item [good](https://example.com/)',
      '',
      '```js',
      'const s = "<img src=y onerror=window.__pwned=4>";',
      '```',
    ].join('\n');
    await send(page, md);
    const content = lastAssistant(page).locator('.content');
    assert.equal(await content.locator('h1').textContent(), 'Title');
    assert.equal(await content.locator('strong').textContent(), 'bold');
    assert.equal(await content.locator('em').textContent(), 'em');
    assert.equal(await content.locator('p code').textContent(), 'inline <b>code</b>');
    assert.equal(await content.locator('li').count(), 2);
    assert.equal(await content.locator('.codeblock code').textContent(), 'const s = "<img src=y onerror=window.__pwned=4>";');
    assert.equal(await content.locator('.codeblock .codehead span').textContent(), 'js');
    // The injection attempts are shown as text.
    const text = await content.textContent();
    assert.ok(text.includes('<img src=x onerror="window.__pwned=1">'), text);
    assert.ok(text.includes('<script>window.__pwned=2</script>'), text);
    assert.equal(await page.locator('.msg.assistant img, .msg.assistant script, .msg.assistant b').count(), 0);
    assert.equal(await content.locator('a[href^="javascript"]').count(), 0);
    assert.equal(await content.locator('a[href="https://example.com/"]').getAttribute('rel'), 'noopener noreferrer nofollow');
    await page.waitForTimeout(200);
    assert.equal(await page.evaluate(() => window.__pwned), undefined);
  });

  test('enable thinking sends the flags and shows <think> text in a collapsible block', async () => {
    const { page, requests } = ctx;
    await page.check('#enable-thinking');
    await send(page, '!say <think>secret plan: add six and seven</think>The answer is 13.');
    const body = requests.at(-1).body;
    assert.equal(body.include_reasoning, true);
    assert.deepEqual(body.chat_template_kwargs, { enable_thinking: true });
    const reply = lastAssistant(page);
    const details = reply.locator('details.reasoning');
    assert.equal(await details.isVisible(), true);
    assert.match(await details.locator('.reasoning-text').textContent(), /secret plan: add six and seven/);
    assert.equal(await details.evaluate((d) => d.open), false, 'collapsed once the answer came');
    await details.locator('summary').click();
    assert.equal(await details.evaluate((d) => d.open), true, 'opens on click');
    assert.equal((await reply.locator('.content').textContent()).trim(), 'The answer is 13.');
    await page.screenshot({ path: path.join(ARTIFACTS, 'webchat-echo.png') });
    await page.uncheck('#enable-thinking');
  });

  test('Regenerate replaces the last reply with a new one', async () => {
    const { page, requests } = ctx;
    await send(page, 'red green blue');
    const before = await page.locator('.msg.assistant').count();
    const n = requests.length;
    await clickAndWait(page, '#regenerate');
    assert.equal(requests.length, n + 1);
    assert.deepEqual(requests.at(-1).body.messages, requests.at(-2).body.messages, 'the same conversation is resent');
    assert.equal(await page.locator('.msg.assistant').count(), before);
    assert.equal((await lastAssistant(page).locator('.content').textContent()).trim(), 'blue green red');
  });

  test('the tools box is validated before sending', async () => {
    const { page, requests } = ctx;
    const n = requests.length;
    await page.fill('#tools', '[{"type": "function", "function": {"name": "get_weather"}');
    await page.fill('#input', 'weather?');
    await page.click('#send');
    await page.locator('#tools-error').waitFor();
    assert.match(await page.textContent('#tools-error'), /not valid JSON/);
    assert.match(await page.textContent('#error'), /Tools/);
    await page.fill('#tools', '[{"type": "function", "function": {"parameters": {}}}]');
    await page.click('#send');
    assert.match(await page.textContent('#tools-error'), /needs/);
    assert.equal(requests.length, n, 'nothing was sent while the tools JSON was invalid');
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
    await page.fill('#tools', JSON.stringify(tools));
    await clickAndWait(page);
    assert.equal(requests.length, n + 1);
    assert.deepEqual(requests.at(-1).body.tools, tools);
    assert.equal(await page.isVisible('#tools-error'), false);
    await page.fill('#tools', '');
  });

  test('the image button appears only when /v1/info accepts images, and sends a data: URL', async () => {
    const { page, requests } = ctx;
    assert.equal(await page.isVisible('#attach'), false, 'echo takes no images: no button');
    // Pretend the backend accepts images (the real server's /v1/info, with images turned on).
    await page.route('**/v1/info', async (route) => {
      const res = await route.fetch();
      const info = await res.json();
      info.capabilities.images = true;
      await route.fulfill({ response: res, json: info });
    });
    await page.reload();
    await page.waitForFunction(() => window.switchyardChat.state.info);
    assert.equal(await page.isVisible('#attach'), true);
    const png = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==', 'base64');
    await page.setInputFiles('#image-file', { name: 'dot.png', mimeType: 'image/png', buffer: png });
    await page.locator('.attachment img').waitFor();
    const n = requests.length;
    await page.fill('#input', 'what is in this picture');
    await clickAndWait(page);
    assert.equal(requests.length, n + 1);
    const last = requests.at(-1).body.messages.at(-1);
    assert.equal(last.role, 'user');
    assert.deepEqual(last.content[0], { type: 'text', text: 'what is in this picture' });
    assert.equal(last.content[1].type, 'image_url');
    assert.equal(last.content[1].image_url.url, `data:image/png;base64,${png.toString('base64')}`);
    assert.equal(await page.locator('.msg.user img').last().getAttribute('src'), last.content[1].image_url.url);
    await page.unroute('**/v1/info');
  });
});

describe('vision-language model on hf-candle (tiny Qwen2-VL)', { skip: !VLM_URL && 'libhf_candle.so not built' }, () => {
  test('the attach button sends the picked file, and the reply is the API\'s for the same request', async () => {
    const { context, page, requests, errors } = await openPage(VLM_URL);
    try {
      assert.equal(await page.isVisible('#attach'), true, 'a VLM declares images: the button shows');
      await page.fill('#max-tokens', '8');
      await page.fill('#temperature', '0');
      await page.setInputFiles('#image-file', VLM_IMAGE);
      await page.locator('.attachment img').waitFor();
      await send(page, 'What is in the picture?');
      const body = requests.at(-1).body;
      const last = body.messages.at(-1);
      const png = fs.readFileSync(VLM_IMAGE);
      assert.equal(last.content[1].image_url.url, `data:image/png;base64,${png.toString('base64')}`);
      const shown = (await lastAssistant(page).locator('.content').textContent()).trim();
      // The same request through the API, not streamed: the server's greedy reply (which
      // tests/api/test_vision.py checks against Transformers).
      const res = await fetch(`${VLM_URL}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...body, stream: false, stream_options: undefined }),
      });
      assert.equal(res.status, 200, await res.clone().text());
      const want = (await res.json()).choices[0].message.content.trim();
      assert.ok(want.length > 0, 'the model replied');
      assert.equal(shown, want);
      assert.deepEqual(errors, [], 'no script errors on the page');
    } finally {
      await context.close();
    }
  });
});

describe('server with an API key', () => {
  test('asks for the key once, keeps it in sessionStorage and sends it as Bearer', async () => {
    const ctx = await openPage(KEY_URL, { waitInfo: false });
    const { page, requests } = ctx;
    const dialog = page.locator('#key-dialog');
    await dialog.waitFor({ state: 'visible' });
    // A wrong key is refused and asked again.
    await page.fill('#key-input', 'wrong-key');
    await page.click('#key-ok');
    await page.waitForFunction(() => /rejected/.test(document.getElementById('key-reason').textContent));
    assert.equal(await dialog.isVisible(), true);
    await page.fill('#key-input', API_KEY);
    await page.click('#key-ok');
    await page.waitForFunction(() => window.switchyardChat.state.info);
    assert.equal(await page.textContent('#info-backend'), 'echo');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('switchyard.apiKey')), API_KEY);
    await send(page, 'key works');
    assert.equal((await lastAssistant(page).locator('.content').textContent()).trim(), 'works key');
    assert.equal(requests.at(-1).headers.authorization, `Bearer ${API_KEY}`);
    // Reloading the tab asks no more.
    await page.reload();
    await page.waitForFunction(() => window.switchyardChat.state.info);
    assert.equal(await dialog.isVisible(), false);
    assert.equal(await page.locator('.msg.assistant').count(), 1, 'the conversation survives a reload');
    assert.deepEqual(ctx.errors, []);
    await ctx.context.close();
  });
});

describe('server with several models', () => {
  test('the picker lists the models and adapters, and the reply comes from the one picked', async () => {
    const ctx = await openPage(MODELS_URL);
    const { page, requests } = ctx;
    const select = page.locator('#model-select');
    await select.waitFor({ state: 'visible' });
    const options = await select.locator('option').evaluateAll((os) => os.map((o) => o.value));
    assert.deepEqual(options, ['alpha', 'sql', 'beta']);
    // A named LoRA adapter says what it runs on.
    assert.equal(await select.locator('option[value="sql"]').textContent(), 'sql (LoRA on alpha)');
    await send(page, 'one two');
    assert.equal((await lastAssistant(page).locator('.content').textContent()).trim(), 'A: two one');
    assert.equal(requests.at(-1).body.model, 'alpha');
    await select.selectOption('beta');
    await page.waitForFunction(() => window.switchyardChat.state.info.model === 'beta');
    await send(page, 'three four');
    assert.equal((await lastAssistant(page).locator('.content').textContent()).trim(), 'B: four three');
    assert.equal(requests.at(-1).body.model, 'beta');
    await select.selectOption('sql');
    await page.waitForFunction(() => window.switchyardChat.state.info.model === 'sql');
    await send(page, 'five six');
    assert.equal((await lastAssistant(page).locator('.content').textContent()).trim(), 'sql: six five');
    assert.equal(requests.at(-1).body.model, 'sql');
    assert.deepEqual(ctx.errors, []);
    await ctx.context.close();
  });
});

describe(`structured output and logprobs (${MAIN_BACKEND})`, { skip: !REAL && 'the echo backend has no constraints or logprobs' }, () => {
  let ctx;
  before(async () => {
    ctx = await openPage(MAIN_URL);
    await ctx.page.fill('#max-tokens', '40');
    await ctx.page.fill('#temperature', '0');
  });
  after(async () => {
    assert.deepEqual(ctx.errors, [], 'no script errors on the page');
    await ctx.context.close();
  });

  test('JSON mode asks for a JSON object and the reply is one', async () => {
    const { page, requests } = ctx;
    await page.check('#json-mode');
    await send(page, 'Describe a cat.');
    assert.deepEqual(requests.at(-1).body.response_format, { type: 'json_object' });
    const text = (await lastAssistant(page).locator('.content').textContent()).trim();
    const meta = await lastAssistant(page).locator('.meta').textContent();
    assert.ok(text.startsWith('{'), `JSON reply: ${text}`);
    if (!/finish: length/.test(meta)) assert.equal(typeof JSON.parse(text), 'object', text);
    await page.uncheck('#json-mode');
  });

  test('token logprobs: one chip per token, hover shows the logprob and alternatives', async () => {
    const { page, requests } = ctx;
    await page.check('#show-logprobs');
    await page.fill('#max-tokens', '12');
    await send(page, 'Name a colour.');
    const body = requests.at(-1).body;
    assert.equal(body.logprobs, true);
    assert.equal(body.top_logprobs, 5);
    const reply = lastAssistant(page);
    const chips = reply.locator('.tokens .token');
    const n = await chips.count();
    assert.ok(n > 0, 'token chips shown');
    const joined = (await chips.allTextContents()).join('');
    const content = await page.evaluate(() => window.switchyardChat.state.messages.at(-1).content);
    assert.equal(joined, content, 'the chips spell the reply');
    await chips.first().hover();
    const title = await chips.first().getAttribute('title');
    assert.match(title, /logprob -?\d+\.\d{3} \(\d+\.\d%\)\nalternatives: /, title);
  });
});
