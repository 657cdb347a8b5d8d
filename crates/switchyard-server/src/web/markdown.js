// Switchyard web chat: the DOM builder and the safe Markdown renderer (loaded before app.js).
//
// Safety rule for this file: text from the model only ever reaches the page through text nodes
// and element properties set here; links are limited to http(s) and mailto. Nothing is ever
// assigned to `innerHTML`.
'use strict';

(() => {
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

  window.SwitchyardMarkdown = { h, codeBlock, renderMarkdown };
})();
