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

  /** Creates an element; `props` sets properties (className, textContent, ...), children are
   *  nodes or strings (strings become text nodes). */
  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === undefined || v === null) continue;
        if (k === 'dataset') Object.assign(node.dataset, v);
        else if (k === 'attrs') for (const [a, av] of Object.entries(v)) node.setAttribute(a, av);
        else node[k] = v;
      }
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return node;
  }

  // ---------------------------------------------------------------- Markdown (safe subset)

  const FENCE_RE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)[^`]*$/;
  const HEADING_RE = /^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$/;
  const HR_RE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
  const QUOTE_RE = /^ {0,3}>[ \t]?(.*)$/;
  const LIST_RE = /^([ \t]*)([-*+]|\d{1,9}[.)])[ \t]+(.*)$/;
  const TABLE_SEP_RE = /^[ \t]*\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;

  function isBlockStart(line, next) {
    return FENCE_RE.test(line) || HEADING_RE.test(line) || HR_RE.test(line) ||
      QUOTE_RE.test(line) || LIST_RE.test(line) ||
      (line.includes('|') && next !== undefined && TABLE_SEP_RE.test(next) && next.includes('-'));
  }

  function indentOf(s) {
    let n = 0;
    for (const ch of s) {
      if (ch === ' ') n += 1;
      else if (ch === '\t') n += 4;
      else break;
    }
    return n;
  }

  function stripIndent(line, n) {
    let i = 0;
    let col = 0;
    while (i < line.length && col < n && (line[i] === ' ' || line[i] === '\t')) {
      col += line[i] === '\t' ? 4 : 1;
      i += 1;
    }
    return line.slice(i);
  }

  function splitRow(line) {
    let s = line.trim();
    if (s.startsWith('|')) s = s.slice(1);
    if (s.endsWith('|') && !s.endsWith('\\|')) s = s.slice(0, -1);
    const cells = [];
    let cur = '';
    for (let i = 0; i < s.length; i += 1) {
      if (s[i] === '\\' && s[i + 1] === '|') { cur += '|'; i += 1; }
      else if (s[i] === '|') { cells.push(cur.trim()); cur = ''; }
      else cur += s[i];
    }
    cells.push(cur.trim());
    return cells;
  }

  function codeBlock(code, lang) {
    const copy = h('button', { type: 'button', className: 'ghost copy', textContent: 'Copy' });
    copy.addEventListener('click', () => {
      const done = () => { copy.textContent = 'Copied'; setTimeout(() => { copy.textContent = 'Copy'; }, 1200); };
      if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(code).then(done, () => {});
      else {
        const ta = h('textarea', { value: code });
        document.body.append(ta);
        ta.select();
        try { document.execCommand('copy'); done(); } catch (_) { /* ignore */ }
        ta.remove();
      }
    });
    const codeEl = h('code', { textContent: code });
    if (lang) codeEl.dataset.lang = lang;
    return h('div', { className: 'codeblock' },
      h('div', { className: 'codehead' }, h('span', { textContent: lang || 'code' }), copy),
      h('pre', null, codeEl));
  }

  /** Parses Markdown `text` into block nodes appended to `parent`. */
  function renderBlocks(text, parent) {
    const lines = text.replace(/\r\n?/g, '\n').split('\n');
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      if (/^\s*$/.test(line)) { i += 1; continue; }

      let m = FENCE_RE.exec(line);
      if (m) {
        const fence = m[1];
        const closeRe = new RegExp(`^ {0,3}\\${fence[0]}{${fence.length},}[ \\t]*$`);
        const body = [];
        i += 1;
        while (i < lines.length && !closeRe.test(lines[i])) { body.push(lines[i]); i += 1; }
        i += 1; // the closing fence (or the end of a still-streaming block)
        parent.append(codeBlock(body.join('\n'), m[2]));
        continue;
      }
      m = HEADING_RE.exec(line);
      if (m) {
        parent.append(renderInline(m[2], h(`h${m[1].length}`)));
        i += 1;
        continue;
      }
      if (HR_RE.test(line)) { parent.append(h('hr')); i += 1; continue; }
      if (QUOTE_RE.test(line)) {
        const inner = [];
        while (i < lines.length && !/^\s*$/.test(lines[i])) {
          const q = QUOTE_RE.exec(lines[i]);
          inner.push(q ? q[1] : lines[i]);
          i += 1;
        }
        const bq = h('blockquote');
        renderBlocks(inner.join('\n'), bq);
        parent.append(bq);
        continue;
      }
      m = LIST_RE.exec(line);
      if (m) { i = renderList(lines, i, parent); continue; }
      if (line.includes('|') && i + 1 < lines.length && TABLE_SEP_RE.test(lines[i + 1]) && lines[i + 1].includes('-')) {
        const head = splitRow(line);
        const aligns = splitRow(lines[i + 1]).map((c) => (c.startsWith(':') && c.endsWith(':') ? 'center' : c.endsWith(':') ? 'right' : ''));
        const table = h('table');
        const tr = h('tr');
        head.forEach((c, k) => { const th = renderInline(c, h('th')); if (aligns[k]) th.style.textAlign = aligns[k]; tr.append(th); });
        table.append(h('thead', null, tr));
        const tbody = h('tbody');
        i += 2;
        while (i < lines.length && lines[i].includes('|') && !/^\s*$/.test(lines[i])) {
          const row = h('tr');
          splitRow(lines[i]).forEach((c, k) => { const td = renderInline(c, h('td')); if (aligns[k]) td.style.textAlign = aligns[k]; row.append(td); });
          tbody.append(row);
          i += 1;
        }
        table.append(tbody);
        parent.append(table);
        continue;
      }
      // A paragraph: runs until a blank line or the start of another block.
      const para = [line];
      i += 1;
      while (i < lines.length && !/^\s*$/.test(lines[i]) && !isBlockStart(lines[i], lines[i + 1])) {
        para.push(lines[i]);
        i += 1;
      }
      parent.append(renderInline(para.map((l) => l.trim()).join('\n'), h('p')));
    }
    return parent;
  }

  function renderList(lines, start, parent) {
    const first = LIST_RE.exec(lines[start]);
    const baseIndent = indentOf(first[1]);
    const ordered = /\d/.test(first[2]);
    const list = h(ordered ? 'ol' : 'ul');
    if (ordered) {
      const n = parseInt(first[2], 10);
      if (n !== 1) list.start = n;
    }
    let i = start;
    while (i < lines.length) {
      const m = LIST_RE.exec(lines[i]);
      if (!m || indentOf(m[1]) !== baseIndent || /\d/.test(m[2]) !== ordered) break;
      const contentIndent = baseIndent + m[2].length + 1;
      const itemLines = [m[3]];
      i += 1;
      while (i < lines.length) {
        const l = lines[i];
        if (/^\s*$/.test(l)) {
          // A blank line continues the item only when indented content follows.
          if (i + 1 < lines.length && indentOf(lines[i + 1]) > baseIndent && !/^\s*$/.test(lines[i + 1])) {
            itemLines.push('');
            i += 1;
            continue;
          }
          break;
        }
        const lm = LIST_RE.exec(l);
        if (lm && indentOf(lm[1]) <= baseIndent) break;
        if (indentOf(l) > baseIndent) { itemLines.push(stripIndent(l, contentIndent)); i += 1; continue; }
        if (isBlockStart(l, lines[i + 1])) break;
        itemLines.push(l); // lazy continuation
        i += 1;
      }
      const li = h('li');
      renderBlocks(itemLines.join('\n'), li);
      // Tight items: unwrap a lone paragraph.
      if (li.childNodes.length >= 1 && li.firstChild.nodeName === 'P') {
        const p = li.firstChild;
        while (p.firstChild) li.insertBefore(p.firstChild, p);
        p.remove();
      }
      list.append(li);
      // Skip one blank line between items of the same list.
      if (i < lines.length && /^\s*$/.test(lines[i]) && i + 1 < lines.length) {
        const nm = LIST_RE.exec(lines[i + 1]);
        if (nm && indentOf(nm[1]) === baseIndent && /\d/.test(nm[2]) === ordered) i += 1;
      }
    }
    parent.append(list);
    return i;
  }

  const SAFE_URL_RE = /^(https?:\/\/|mailto:)/i;
  const PUNCT = '!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~';

  function link(text, url) {
    if (!SAFE_URL_RE.test(url)) return null;
    return h('a', { href: url, target: '_blank', rel: 'noopener noreferrer nofollow', textContent: text });
  }

  /** Parses inline Markdown in `src` into child nodes of `parent` (code, emphasis, links). */
  function renderInline(src, parent) {
    let text = '';
    const flush = () => {
      if (!text) return;
      const parts = text.split('\n');
      parts.forEach((p, k) => {
        if (k > 0) parent.append(h('br'));
        if (p) parent.append(document.createTextNode(p));
      });
      text = '';
    };
    let i = 0;
    while (i < src.length) {
      const ch = src[i];
      const rest = src.slice(i);
      if (ch === '\\' && i + 1 < src.length && PUNCT.includes(src[i + 1])) {
        text += src[i + 1];
        i += 2;
        continue;
      }
      if (ch === '`') {
        const run = /^`+/.exec(rest)[0];
        const end = src.indexOf(run, i + run.length);
        if (end > 0) {
          flush();
          let code = src.slice(i + run.length, end);
          if (/^ .* $/.test(code)) code = code.slice(1, -1);
          parent.append(h('code', { textContent: code }));
          i = end + run.length;
          continue;
        }
        text += run;
        i += run.length;
        continue;
      }
      let m;
      if (ch === '!' && (m = /^!\[([^\]]*)\]\(\s*<?([^\s)>]*)>?(?:\s+"[^"]*")?\s*\)/.exec(rest))) {
        // Images are never loaded (no external network); show them as links.
        flush();
        const a = link(`[image: ${m[1] || m[2]}]`, m[2]);
        parent.append(a || document.createTextNode(m[0]));
        i += m[0].length;
        continue;
      }
      if (ch === '[' && (m = /^\[((?:\\.|[^\]\\])*)\]\(\s*<?([^\s)>]*)>?(?:\s+"[^"]*")?\s*\)/.exec(rest))) {
        flush();
        const a = link('', m[2]);
        if (a) {
          a.textContent = '';
          renderInline(m[1], a);
          parent.append(a);
        } else {
          renderInline(m[1], parent);
        }
        i += m[0].length;
        continue;
      }
      if ((ch === 'h' || ch === 'H') && (m = /^https?:\/\/[^\s<>"']*[^\s<>"'.,;:!?)\]]/i.exec(rest))) {
        const prev = i > 0 ? src[i - 1] : ' ';
        if (!/[\w/]/.test(prev)) {
          flush();
          parent.append(link(m[0], m[0]));
          i += m[0].length;
          continue;
        }
      }
      if (ch === '*' || ch === '_' || ch === '~') {
        const prev = i > 0 ? src[i - 1] : ' ';
        const strong = ch !== '~' && src[i + 1] === ch;
        const delim = ch === '~' ? (src[i + 1] === '~' ? '~~' : null) : (strong ? ch + ch : ch);
        const intraword = ch === '_' && /\w/.test(prev);
        if (delim && !intraword && src[i + delim.length] && !/\s/.test(src[i + delim.length])) {
          const close = findClose(src, i + delim.length, delim);
          if (close > 0) {
            flush();
            const tag = ch === '~' ? 'del' : strong ? 'strong' : 'em';
            parent.append(renderInline(src.slice(i + delim.length, close), h(tag)));
            i = close + delim.length;
            continue;
          }
        }
      }
      text += ch;
      i += 1;
    }
    flush();
    return parent;
  }

  function findClose(src, from, delim) {
    let j = from;
    while (j < src.length) {
      if (src[j] === '\\') { j += 2; continue; }
      if (src[j] === '`') {
        const run = /^`+/.exec(src.slice(j))[0];
        const end = src.indexOf(run, j + run.length);
        if (end > 0) { j = end + run.length; continue; }
      }
      if (src.startsWith(delim, j) && !/\s/.test(src[j - 1]) &&
          (delim.length === 2 || src[j + 1] !== delim[0]) &&
          !(delim[0] === '_' && /\w/.test(src[j + delim.length] || ''))) {
        return j;
      }
      if (delim.length === 1 && src.startsWith(delim + delim, j)) { j += 2; continue; }
      j += 1;
    }
    return -1;
  }

  /** Renders Markdown `text` into `container`, replacing what was there. */
  function renderMarkdown(text, container) {
    const frag = document.createDocumentFragment();
    renderBlocks(text, frag);
    container.replaceChildren(frag);
  }

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
      const meta = h('div', { className: 'meta' });
      v = {
        root: h('div', { className: 'msg assistant', dataset: { role: 'assistant' } },
          h('div', { className: 'bubble' }, reasoning, content, tools, meta)),
        reasoning, summary, reasoningText, content, tools, meta, userToggled: false, autoOpen: false,
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
    v.meta.textContent = msg.meta || '';
    v.meta.classList.toggle('stopped', !!msg.stopped);
    v.meta.hidden = !msg.meta;
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

  const settingsIds = ['system-prompt', 'max-tokens', 'temperature', 'top-p', 'seed', 'skip-special', 'enable-thinking', 'tools'];

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
    const label = (m) => m.status === 'loaded' ? m.id : `${m.id} (${m.status})`;
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
