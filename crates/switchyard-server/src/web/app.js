// Switchyard web chat: streams replies from /v1/chat/completions (SSE) and renders them safely.
//
// Safety rule for this file: text from the model, the server or the user only ever reaches the
// page through `textContent`/text nodes, element attributes set from vetted values (http(s) and
// mailto links, data: URLs of images the user attached), or DOM nodes built here. Nothing is ever
// assigned to `innerHTML`. The page is also served with a strict Content-Security-Policy.
'use strict';

(() => {
  const KEY_STORE = 'switchyard.apiKey';
  const CHAT_STORE = 'switchyard.chat';
  const SETTINGS_STORE = 'switchyard.settings';

  const $ = (id) => document.getElementById(id);

  const state = {
    info: null,
    model: '', // the model picked (empty: the server's first)
    models: [], // GET /v1/models entries
    messages: [], // {role: 'user'|'assistant'|'error', content, images?, reasoning?, toolCalls?, meta?}
    busy: false,
    controller: null,
    attachments: [], // data: URLs
    lastRequest: null, // the last chat request body sent (for debugging from the console)
    done: 0, // replies finished (or failed, or stopped) so far
  };

  // ---------------------------------------------------------------- DOM helpers

  const { h, codeBlock, renderMarkdown } = window.SwitchyardMarkdown;

  // ---------------------------------------------------------------- messages view

  const messagesEl = $('messages');
  const views = new Map(); // message -> {root, content, ...}

  function nearBottom() {
    return messagesEl.scrollHeight - messagesEl.scrollTop - messagesEl.clientHeight < 80;
  }

  function scrollDown(force) {
    if (force || nearBottom()) messagesEl.scrollTop = messagesEl.scrollHeight;
  }

  function viewFor(msg) {
    let v = views.get(msg);
    if (v) return v;
    if (msg.role === 'user') {
      const bubble = h('div', { className: 'bubble' });
      if (msg.images && msg.images.length) {
        bubble.append(h('div', { className: 'images' },
          ...msg.images.map((url) => h('img', { src: url, alt: 'attached image' }))));
      }
      bubble.append(h('div', { className: 'content', textContent: msg.content }));
      v = { root: h('div', { className: 'msg user', dataset: { role: 'user' } }, bubble) };
    } else if (msg.role === 'error') {
      v = { root: h('div', { className: 'msg error', dataset: { role: 'error' }, attrs: { role: 'alert' } },
        h('div', { className: 'bubble', textContent: msg.content })) };
    } else {
      const summary = h('summary', { textContent: 'Thinking' });
      const reasoningText = h('div', { className: 'reasoning-text' });
      const reasoning = h('details', { className: 'reasoning', hidden: true }, summary, reasoningText);
      const content = h('div', { className: 'content' });
      const tools = h('div', { className: 'toolcalls' });
      const tokens = h('div', { className: 'tokens', hidden: true });
      const meta = h('div', { className: 'meta' });
      v = {
        root: h('div', { className: 'msg assistant', dataset: { role: 'assistant' } },
          h('div', { className: 'bubble' }, reasoning, content, tools, tokens, meta)),
        reasoning, summary, reasoningText, content, tools, tokens, meta, userToggled: false, autoOpen: false,
      };
      // A toggle that the page did not ask for is the user's: leave the block as they want it.
      reasoning.addEventListener('toggle', () => { if (reasoning.open !== v.autoOpen) v.userToggled = true; });
    }
    views.set(msg, v);
    return v;
  }

  function updateAssistant(msg, streaming) {
    const v = viewFor(msg);
    if (msg.reasoning) {
      v.reasoning.hidden = false;
      v.reasoningText.textContent = msg.reasoning;
      const thinking = streaming && !msg.content;
      v.summary.textContent = thinking ? 'Thinking…' : 'Thoughts';
      if (!v.userToggled) {
        v.autoOpen = thinking;
        v.reasoning.open = thinking;
      }
    } else {
      v.reasoning.hidden = true;
    }
    renderMarkdown(msg.content || '', v.content);
    v.content.classList.toggle('typing', !!streaming);
    v.tools.replaceChildren(...(msg.toolCalls || []).map((c) => {
      let args = c.function && c.function.arguments;
      try { args = JSON.stringify(JSON.parse(args), null, 2); } catch (_) { /* keep as sent */ }
      return h('div', { className: 'toolcall' },
        h('div', { className: 'label', textContent: `Tool call: ${(c.function && c.function.name) || '?'}` }),
        codeBlock(args || '', 'json'));
    }));
    renderTokens(msg, v.tokens);
    v.meta.textContent = msg.meta || '';
    v.meta.classList.toggle('stopped', !!msg.stopped);
    v.meta.hidden = !msg.meta;
  }

  /** The reply's tokens, each with its probability as a tint and, on hover, its logprob and
   *  the most likely alternatives (what the model weighed at that step). */
  function renderTokens(msg, box) {
    const lps = msg.logprobs || [];
    box.hidden = !lps.length;
    if (box.childElementCount === lps.length) return;
    for (const t of lps.slice(box.childElementCount)) {
      const p = Math.exp(t.logprob);
      const alts = (t.top_logprobs || []).map((a) => `${JSON.stringify(a.token)} ${(100 * Math.exp(a.logprob)).toFixed(1)}%`);
      box.append(h('span', {
        className: `token${p < 0.5 ? ' unsure' : ''}`,
        textContent: t.token,
        title: `${JSON.stringify(t.token)}: logprob ${t.logprob.toFixed(3)} (${(100 * p).toFixed(1)}%)${alts.length ? `\nalternatives: ${alts.join(', ')}` : ''}`,
      }));
    }
  }

  function renderAll() {
    messagesEl.replaceChildren();
    if (!state.messages.length) messagesEl.append(emptyEl);
    for (const msg of state.messages) {
      messagesEl.append(viewFor(msg).root);
      if (msg.role === 'assistant') updateAssistant(msg, false);
    }
    scrollDown(true);
    updateButtons();
  }

  function appendView(msg) {
    emptyEl.remove();
    messagesEl.append(viewFor(msg).root);
    scrollDown(true);
  }

  const emptyEl = $('empty');

  // ---------------------------------------------------------------- settings

  const settingsIds = ['system-prompt', 'max-tokens', 'temperature', 'top-p', 'seed', 'skip-special', 'enable-thinking', 'json-mode', 'show-logprobs', 'tools'];

  function saveSettings() {
    const s = {};
    for (const id of settingsIds) {
      const e = $(id);
      s[id] = e.type === 'checkbox' ? e.checked : e.value;
    }
    try { localStorage.setItem(SETTINGS_STORE, JSON.stringify(s)); } catch (_) { /* storage full or off */ }
  }

  function loadSettings() {
    let s;
    try { s = JSON.parse(localStorage.getItem(SETTINGS_STORE) || 'null'); } catch (_) { s = null; }
    if (!s) return;
    for (const id of settingsIds) {
      if (!(id in s)) continue;
      const e = $(id);
      if (e.type === 'checkbox') e.checked = !!s[id];
      else e.value = s[id];
    }
  }

  /** Validates the tools box: `{tools}` (null when empty) or `{error}`. */
  function parseTools() {
    const raw = $('tools').value.trim();
    if (!raw) return { tools: null };
    let v;
    try {
      v = JSON.parse(raw);
    } catch (e) {
      return { error: `Tools: not valid JSON (${e.message})` };
    }
    if (!Array.isArray(v)) v = [v];
    const tools = [];
    for (let k = 0; k < v.length; k += 1) {
      let t = v[k];
      if (!t || typeof t !== 'object' || Array.isArray(t)) return { error: `Tools: item ${k} must be an object` };
      if (!t.function && typeof t.name === 'string') t = { type: 'function', function: t };
      if (t.type !== undefined && t.type !== 'function') return { error: `Tools: item ${k} has type "${t.type}"; only "function" is supported` };
      const f = t.function;
      if (!f || typeof f !== 'object' || typeof f.name !== 'string' || !f.name.trim()) {
        return { error: `Tools: item ${k} needs {"type": "function", "function": {"name": ...}}` };
      }
      if (f.parameters !== undefined && (typeof f.parameters !== 'object' || f.parameters === null || Array.isArray(f.parameters))) {
        return { error: `Tools: item ${k} (${f.name}): "parameters" must be a JSON Schema object` };
      }
      tools.push({ ...t, type: 'function' });
    }
    return { tools: tools.length ? tools : null };
  }

  function showToolsError() {
    const r = parseTools();
    const box = $('tools-error');
    box.hidden = !r.error;
    box.textContent = r.error || '';
    $('tools').classList.toggle('invalid', !!r.error);
    return r;
  }

  function numberSetting(id, name, integer) {
    const raw = $(id).value.trim();
    if (raw === '') return { value: undefined };
    const n = Number(raw);
    if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) {
      return { error: `${name} must be ${integer ? 'a whole number' : 'a number'}` };
    }
    return { value: n };
  }

  /** The request body for the current conversation, or throws a message for the user. */
  function buildBody() {
    const tools = showToolsError();
    if (tools.error) throw new UserError(tools.error);
    const messages = [];
    const system = $('system-prompt').value.trim();
    if (system) messages.push({ role: 'system', content: system });
    for (const m of state.messages) {
      if (m.role === 'user') {
        if (m.images && m.images.length) {
          messages.push({
            role: 'user',
            content: [{ type: 'text', text: m.content },
              ...m.images.map((url) => ({ type: 'image_url', image_url: { url } }))],
          });
        } else {
          messages.push({ role: 'user', content: m.content });
        }
      } else if (m.role === 'assistant') {
        const a = { role: 'assistant', content: m.content || '' };
        if (m.toolCalls && m.toolCalls.length) a.tool_calls = m.toolCalls;
        messages.push(a);
      }
    }
    const body = {
      model: state.model || (state.info && state.info.model) || '',
      messages,
      stream: true,
      stream_options: { include_usage: true },
      include_reasoning: true,
      skip_special_tokens: $('skip-special').checked,
      chat_template_kwargs: { enable_thinking: $('enable-thinking').checked },
    };
    const fields = [
      ['max-tokens', 'max_tokens', 'max_new_tokens', true],
      ['temperature', 'temperature', 'temperature', false],
      ['top-p', 'top_p', 'top_p', false],
      ['seed', 'seed', 'seed', true],
    ];
    for (const [id, key, label, integer] of fields) {
      const r = numberSetting(id, label, integer);
      if (r.error) throw new UserError(r.error);
      if (r.value !== undefined) body[key] = r.value;
    }
    if (tools.tools) body.tools = tools.tools;
    // JSON mode is enforced by the backend (constrained decoding), not asked for in the prompt.
    if ($('json-mode').checked) body.response_format = { type: 'json_object' };
    if ($('show-logprobs').checked) Object.assign(body, { logprobs: true, top_logprobs: 5 });
    return body;
  }

  // ---------------------------------------------------------------- errors

  class UserError extends Error {}

  class ApiError extends Error {
    constructor(status, body) {
      const e = (body && body.error) || {};
      const message = typeof e === 'string' ? e : e.message || (status ? `HTTP ${status}` : 'request failed');
      super(message);
      this.status = status;
      this.type = e.type;
      this.param = e.param;
      this.code = e.code;
    }

    describe() {
      const head = this.status ? `Error ${this.status}` : 'Error';
      const extra = [this.type, this.param && `param: ${this.param}`, this.code && `code: ${this.code}`].filter(Boolean);
      return `${head}: ${this.message}${extra.length ? `\n(${extra.join(' · ')})` : ''}`;
    }
  }

  async function errorFrom(res) {
    const text = await res.text().catch(() => '');
    let body = null;
    try { body = JSON.parse(text); } catch (_) { body = { error: { message: text.trim() || res.statusText || `HTTP ${res.status}` } }; }
    return new ApiError(res.status, body);
  }

  function showBanner(text) {
    const b = $('error');
    b.textContent = text || '';
    b.hidden = !text;
  }

  // ---------------------------------------------------------------- API key

  let keyPrompt = null;

  /** Asks for the API key once (concurrent callers share the dialog); resolves to the key or null. */
  function askKey(reason) {
    if (keyPrompt) return keyPrompt;
    const dialog = $('key-dialog');
    $('key-reason').textContent = reason;
    $('key-input').value = '';
    keyPrompt = new Promise((resolve) => {
      const done = (key) => {
        dialog.removeEventListener('close', onClose);
        keyPrompt = null;
        if (key) {
          sessionStorage.setItem(KEY_STORE, key);
          $('forget-key').hidden = false;
        }
        resolve(key || null);
      };
      const onClose = () => done(dialog.returnValue === 'ok' ? $('key-input').value.trim() : null);
      dialog.addEventListener('close', onClose);
      dialog.returnValue = '';
      dialog.showModal();
      $('key-input').focus();
    });
    return keyPrompt;
  }

  $('key-form').addEventListener('submit', (e) => {
    e.preventDefault();
    if (!$('key-input').value.trim()) return;
    $('key-dialog').close('ok');
  });
  $('key-cancel').addEventListener('click', () => $('key-dialog').close(''));
  $('forget-key').addEventListener('click', () => {
    sessionStorage.removeItem(KEY_STORE);
    $('forget-key').hidden = true;
  });

  /** `fetch` with the stored key; on 401 asks for a key and retries. */
  async function apiFetch(path, init) {
    for (;;) {
      const headers = new Headers((init && init.headers) || {});
      const key = sessionStorage.getItem(KEY_STORE);
      if (key) headers.set('Authorization', `Bearer ${key}`);
      let res;
      try {
        res = await fetch(path, { ...init, headers });
      } catch (e) {
        if (e.name === 'AbortError') throw e;
        throw new ApiError(0, { error: { message: `cannot reach the server (${e.message})` } });
      }
      if (res.status !== 401) return res;
      const err = await errorFrom(res);
      if (key) sessionStorage.removeItem(KEY_STORE);
      const entered = await askKey(key ? `The server rejected that key: ${err.message}` : 'This server needs an API key.');
      if (!entered) throw err;
    }
  }

  // ---------------------------------------------------------------- server info

  /** Fills the model picker from GET /v1/models; shown only when there is a choice. */
  async function loadModels() {
    const res = await apiFetch('/v1/models');
    if (!res.ok) throw await errorFrom(res);
    state.models = (await res.json()).data || [];
    const select = $('model-select');
    const label = (m) => {
      if (m.parent) return `${m.id} (LoRA on ${m.parent})`;
      return m.status === 'loaded' ? m.id : `${m.id} (${m.status})`;
    };
    select.replaceChildren(...state.models.map((m) => h('option', { value: m.id, textContent: label(m) })));
    const many = state.models.length > 1;
    select.hidden = !many;
    $('info-model').hidden = many;
    if (!state.models.some((m) => m.id === state.model)) state.model = many ? state.models[0].id : '';
    select.value = state.model;
  }

  async function loadInfo() {
    try {
      await loadModels();
      const query = state.model ? `?model=${encodeURIComponent(state.model)}` : '';
      const res = await apiFetch(`/v1/info${query}`);
      if (!res.ok) throw await errorFrom(res);
      const info = await res.json();
      state.info = info;
      $('info-backend').textContent = info.backend || '?';
      // A served name that is a file path reads better as its file name (full name on hover).
      const shortModel = (info.model || '?').replace(/^.*[\\/](?=[^\\/]+$)/, '');
      $('info-model').textContent = shortModel;
      $('info-model').title = info.model || '';
      document.title = `${shortModel} · Switchyard chat`;
      const images = !!(info.capabilities && info.capabilities.images);
      $('attach').hidden = !images;
      if (!images) clearAttachments();
      showBanner('');
    } catch (e) {
      showBanner(`Cannot load /v1/info: ${e instanceof ApiError ? e.describe() : e.message}`);
    }
  }

  // Picking another model: its info (capabilities, backend), and its name in the next request.
  $('model-select').addEventListener('change', (e) => {
    state.model = e.target.value;
    loadInfo();
  });

  // ---------------------------------------------------------------- attachments

  function clearAttachments() {
    state.attachments = [];
    renderAttachments();
  }

  function renderAttachments() {
    const box = $('attachments');
    box.replaceChildren(...state.attachments.map((url, k) => {
      const rm = h('button', { type: 'button', className: 'ghost', textContent: '×', title: 'Remove' });
      rm.addEventListener('click', () => { state.attachments.splice(k, 1); renderAttachments(); });
      return h('div', { className: 'attachment' }, h('img', { src: url, alt: 'attachment' }), rm);
    }));
    box.hidden = !state.attachments.length;
  }

  $('attach').addEventListener('click', () => $('image-file').click());
  $('image-file').addEventListener('change', async (e) => {
    const files = [...e.target.files];
    e.target.value = '';
    for (const f of files) {
      if (!f.type.startsWith('image/')) { showBanner(`${f.name} is not an image`); continue; }
      const url = await new Promise((resolve, reject) => {
        const r = new FileReader();
        r.onload = () => resolve(r.result);
        r.onerror = () => reject(r.error);
        r.readAsDataURL(f);
      }).catch((err) => { showBanner(`Cannot read ${f.name}: ${err}`); return null; });
      if (url) state.attachments.push(url);
    }
    renderAttachments();
  });

  // ---------------------------------------------------------------- chat

  function saveChat() {
    try {
      sessionStorage.setItem(CHAT_STORE, JSON.stringify(state.messages));
    } catch (_) {
      // Too big (images): keep it without the images.
      try {
        sessionStorage.setItem(CHAT_STORE, JSON.stringify(state.messages.map((m) => ({ ...m, images: undefined }))));
      } catch (__) { /* give up */ }
    }
  }

  function loadChat() {
    try {
      const v = JSON.parse(sessionStorage.getItem(CHAT_STORE) || '[]');
      if (Array.isArray(v)) state.messages = v.filter((m) => m && typeof m.role === 'string' && typeof m.content === 'string');
    } catch (_) { state.messages = []; }
  }

  function updateButtons() {
    $('send').disabled = state.busy;
    $('stop').disabled = !state.busy;
    $('regenerate').disabled = state.busy || !state.messages.some((m) => m.role === 'user');
    document.body.classList.toggle('busy', state.busy);
  }

  function setBusy(busy) {
    state.busy = busy;
    updateButtons();
  }

  function pushError(text) {
    const msg = { role: 'error', content: text };
    state.messages.push(msg);
    appendView(msg);
  }

  /** Reads an SSE body, calling `onData` with each parsed `data:` JSON until `[DONE]`. */
  async function readSse(res, onData) {
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      for (;;) {
        const m = /\r?\n\r?\n/.exec(buf);
        if (!m) break;
        const raw = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        const data = raw.split(/\r?\n/).filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).replace(/^ /, '')).join('\n');
        if (!data) continue;
        if (data === '[DONE]') return;
        let event;
        try { event = JSON.parse(data); } catch (_) { throw new ApiError(0, { error: { message: `bad event from the server: ${data.slice(0, 200)}` } }); }
        onData(event);
      }
    }
  }

  function mergeToolCalls(msg, calls) {
    msg.toolCalls = msg.toolCalls || [];
    for (const c of calls) {
      const k = typeof c.index === 'number' ? c.index : msg.toolCalls.length;
      const cur = msg.toolCalls[k];
      if (!cur) {
        msg.toolCalls[k] = { id: c.id, type: c.type || 'function', function: { name: (c.function && c.function.name) || '', arguments: (c.function && c.function.arguments) || '' } };
      } else if (c.function) {
        if (c.function.name) cur.function.name = c.function.name;
        if (c.function.arguments) cur.function.arguments += c.function.arguments;
      }
    }
  }

  /** Sends the conversation and streams the reply into a new assistant message. */
  async function generate() {
    let body;
    try {
      body = buildBody();
    } catch (e) {
      showBanner(e.message);
      return;
    }
    showBanner('');
    state.lastRequest = body;
    const msg = { role: 'assistant', content: '', reasoning: '' };
    state.messages.push(msg);
    appendView(msg);
    updateAssistant(msg, true);
    const controller = new AbortController();
    state.controller = controller;
    setBusy(true);
    const t0 = performance.now();
    let tFirst = null;
    let pieces = 0;
    let usage = null;
    let finish = null;
    let frame = 0;
    const schedule = () => {
      if (frame) return;
      frame = requestAnimationFrame(() => { frame = 0; updateAssistant(msg, true); scrollDown(false); });
    };
    let failure = null;
    try {
      const res = await apiFetch('/v1/chat/completions', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (!res.ok) throw await errorFrom(res);
      await readSse(res, (ev) => {
        if (ev.error) throw new ApiError(0, ev);
        if (ev.usage) usage = ev.usage;
        for (const c of ev.choices || []) {
          if (c.index && c.index !== 0) continue;
          const d = c.delta || {};
          if (d.reasoning_content) { msg.reasoning += d.reasoning_content; pieces += 1; }
          if (d.content) { msg.content += d.content; pieces += 1; }
          if (d.tool_calls) mergeToolCalls(msg, d.tool_calls);
          if (c.logprobs && c.logprobs.content) (msg.logprobs = msg.logprobs || []).push(...c.logprobs.content);
          if ((d.reasoning_content || d.content) && tFirst === null) tFirst = performance.now();
          if (c.finish_reason) finish = c.finish_reason;
        }
        schedule();
      });
    } catch (e) {
      if (e.name === 'AbortError') msg.stopped = true;
      else failure = e;
    } finally {
      if (frame) cancelAnimationFrame(frame);
      frame = 0;
      state.controller = null;
    }
    const tEnd = performance.now();
    const tokens = usage && usage.completion_tokens ? usage.completion_tokens : pieces;
    const genSecs = tFirst !== null ? (tEnd - tFirst) / 1000 : 0;
    const rate = tokens > 1 && genSecs > 0 ? (tokens - 1) / genSecs : null;
    if (tFirst !== null || msg.toolCalls) {
      const bits = [`${tokens} token${tokens === 1 ? '' : 's'}`];
      if (rate !== null) bits.push(`${rate.toFixed(1)} tok/s`);
      if (tFirst !== null) bits.push(`first token ${((tFirst - t0) / 1000).toFixed(2)} s`);
      if (finish && finish !== 'stop') bits.push(`finish: ${finish}`);
      if (msg.stopped) bits.push('stopped');
      msg.meta = bits.join(' · ');
      $('info-speed').textContent = rate !== null ? `${rate.toFixed(1)} tok/s (${tokens} tokens)` : `${tokens} tokens`;
    } else if (msg.stopped) {
      msg.meta = 'stopped';
    }
    if (!msg.content && !msg.reasoning && !(msg.toolCalls && msg.toolCalls.length) && (failure || msg.stopped)) {
      // Nothing came: drop the empty reply, keep just the error (or nothing for a stop).
      state.messages.splice(state.messages.indexOf(msg), 1);
      viewFor(msg).root.remove();
      views.delete(msg);
      if (msg.stopped) {
        const note = { role: 'error', content: 'Stopped before the first token.' };
        state.messages.push(note);
        appendView(note);
      }
    } else {
      updateAssistant(msg, false);
    }
    if (failure) pushError(failure instanceof ApiError ? failure.describe() : `Error: ${failure.message}`);
    state.done += 1;
    setBusy(false);
    saveChat();
    scrollDown(false);
  }

  async function sendMessage() {
    if (state.busy) return;
    const text = $('input').value;
    if (!text.trim() && !state.attachments.length) return;
    const tools = showToolsError();
    if (tools.error) { showBanner(tools.error); return; }
    const msg = { role: 'user', content: text.trim() };
    if (state.attachments.length) msg.images = [...state.attachments];
    state.messages.push(msg);
    appendView(msg);
    $('input').value = '';
    clearAttachments();
    await generate();
  }

  function regenerate() {
    if (state.busy) return;
    let last = state.messages.length - 1;
    while (last >= 0 && state.messages[last].role !== 'user') last -= 1;
    if (last < 0) return;
    for (const m of state.messages.splice(last + 1)) {
      const v = views.get(m);
      if (v) v.root.remove();
      views.delete(m);
    }
    generate();
  }

  function stop() {
    if (state.controller) state.controller.abort();
  }

  function clearChat() {
    stop();
    state.messages = [];
    views.clear();
    showBanner('');
    $('info-speed').textContent = '–';
    saveChat();
    renderAll();
  }

  // ---------------------------------------------------------------- wiring

  $('composer').addEventListener('submit', (e) => { e.preventDefault(); sendMessage(); });
  $('input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      sendMessage();
    }
  });
  $('stop').addEventListener('click', stop);
  $('clear').addEventListener('click', clearChat);
  $('regenerate').addEventListener('click', regenerate);
  $('settings-toggle').addEventListener('click', () => {
    const s = $('settings');
    s.hidden = !s.hidden;
    $('settings-toggle').setAttribute('aria-expanded', String(!s.hidden));
  });
  for (const id of settingsIds) {
    $(id).addEventListener('input', saveSettings);
    $(id).addEventListener('change', saveSettings);
  }
  let toolsTimer = 0;
  $('tools').addEventListener('input', () => {
    clearTimeout(toolsTimer);
    toolsTimer = setTimeout(showToolsError, 300);
  });

  loadSettings();
  showToolsError();
  loadChat();
  renderAll();
  $('forget-key').hidden = !sessionStorage.getItem(KEY_STORE);
  loadInfo();

  // Hooks for tests and the console (read-only views and the renderer).
  window.switchyardChat = {
    get state() { return state; },
    renderMarkdown,
  };
})();
