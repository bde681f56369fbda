// authback's operator console: plain JavaScript, no build step, no
// dependencies. It talks only to this admin listener's own /v1 API and
// /metrics. Every value from the API is put on the page with textContent
// or setAttribute, never parsed as HTML. The admin token lives in memory
// (and, if asked, in this tab's sessionStorage); it is sent as a Bearer
// header and never as a cookie.
'use strict';

(function () {
  const TOKEN_KEY = 'authback.console.token';
  const PAGE = 50;
  const LIVE_EVERY_MS = 10000;
  const FOLLOW_EVERY_MS = 1500;

  const state = {
    token: null,
    seq: 0,
    timer: null,
    liveTimer: null,
    // Cursors of the pages before this one, for "Previous page".
    cursors: [],
    listKey: '',
  };
  try {
    state.token = sessionStorage.getItem(TOKEN_KEY);
  } catch (_) {
    state.token = null;
  }

  const csp = [];
  document.addEventListener('securitypolicyviolation', (e) => {
    csp.push(e.violatedDirective + ' ' + (e.blockedURI || ''));
    document.body.setAttribute('data-csp-violations', String(csp.length));
  });

  // ---------------------------------------------------------------------
  // DOM helpers: text is always a text node.

  function h(tag, attrs, ...kids) {
    return fill(document.createElement(tag), attrs, kids);
  }

  function svg(tag, attrs, ...kids) {
    return fill(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs, kids);
  }

  function fill(el, attrs, kids) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') {
        el.addEventListener(k.slice(2), v);
      } else if (k === 'class') {
        el.setAttribute('class', v);
      } else {
        el.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : String(kid));
    }
    return el;
  }

  const $ = (sel) => document.querySelector(sel);

  function setMain(...nodes) {
    const main = $('#main');
    // Keep keyboard focus on the same control across a refresh.
    const focused = document.activeElement && document.activeElement.id;
    main.replaceChildren(...nodes);
    main.removeAttribute('aria-busy');
    if (focused) {
      const again = document.getElementById(focused);
      if (again) again.focus();
    }
  }

  function notice(text, kind) {
    const n = $('#notice');
    n.replaceChildren();
    n.className = kind || '';
    n.hidden = !text;
    if (text) n.append(text);
  }

  // ---------------------------------------------------------------------
  // Formatting.

  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (isNaN(d.getTime())) return String(iso);
    return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  }

  function fmtSecs(s) {
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60 ? (s % 60) + ' s' : '');
    if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
    return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h';
  }

  function ago(iso) {
    const t = Date.parse(iso);
    if (!iso || isNaN(t)) return '—';
    const d = (Date.now() - t) / 1000;
    return d >= 0 ? fmtSecs(d).trim() + ' ago' : 'in ' + fmtSecs(-d).trim();
  }

  function when(iso) {
    if (!iso) return '—';
    return h('time', { datetime: iso, title: fmtTime(iso) }, ago(iso));
  }

  function badge(s) {
    return h('span', { class: 'badge badge-' + String(s).replace(/[^a-z]/g, '') }, String(s));
  }

  function text(v) {
    return v === null || v === undefined || v === '' ? '—' : String(v);
  }

  // datetime-local (the reader's local time) <-> RFC 3339 UTC.
  function fromLocalInput(v) {
    if (!v) return '';
    const d = new Date(v);
    return isNaN(d.getTime()) ? '' : d.toISOString().replace(/\.\d+Z$/, 'Z');
  }

  function toLocalInput(iso) {
    const d = new Date(iso);
    if (!iso || isNaN(d.getTime())) return '';
    const p = (n) => String(n).padStart(2, '0');
    return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + 'T' +
      p(d.getHours()) + ':' + p(d.getMinutes());
  }

  // ---------------------------------------------------------------------
  // The API.

  class AuthError extends Error {}
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (state.token) headers.Authorization = 'Bearer ' + state.token;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let resp;
    try {
      resp = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'omit',
        cache: 'no-store',
        redirect: 'error',
      });
    } catch (e) {
      throw new ApiError(0, 'authback did not answer (' + e.message + ')');
    }
    if (resp.status === 401) throw new AuthError(state.token ? 'refused' : 'needed');
    const raw = await resp.text();
    let data = null;
    try {
      data = raw ? JSON.parse(raw) : null;
    } catch (_) {
      data = null;
    }
    if (!resp.ok) {
      const msg = data && data.message ? data.message : raw || resp.statusText;
      throw new ApiError(resp.status, resp.status + ': ' + msg);
    }
    return { data, headers: resp.headers, status: resp.status };
  }

  function setToken(t, keep) {
    state.token = t || null;
    try {
      if (t && keep) sessionStorage.setItem(TOKEN_KEY, t);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // Private modes may refuse storage: memory it is.
    }
    $('#forget').hidden = !state.token;
  }

  // ---------------------------------------------------------------------
  // Routing: #/deliveries?filters, #/delivery/ID, #/incidents, #/replay.

  function parseHash() {
    const raw = location.hash.slice(1);
    if (!raw.startsWith('/')) return null;
    const i = raw.indexOf('?');
    const path = i < 0 ? raw : raw.slice(0, i);
    const query = i < 0 ? '' : raw.slice(i + 1);
    let parts;
    try {
      parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    } catch (_) {
      parts = [];
    }
    return { parts, params: new URLSearchParams(query) };
  }

  function go(hash) {
    if (location.hash === hash) render();
    else location.hash = hash;
  }

  function setNav(view) {
    for (const a of document.querySelectorAll('nav.views a')) {
      if (a.getAttribute('data-view') === view) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
  }

  let current = null;

  async function render() {
    clearTimeout(state.timer);
    state.timer = null;
    const seq = ++state.seq;
    const r = parseHash() || current || { parts: ['deliveries'], params: new URLSearchParams() };
    current = r;
    const view = r.parts[0] || 'deliveries';
    const dead = view === 'deliveries' && r.params.get('state') === 'dead' && !r.params.get('q');
    setNav(view === 'delivery' ? 'deliveries' : dead ? 'dead' : view);
    $('#main').setAttribute('aria-busy', 'true');
    document.body.setAttribute('data-view', view);
    try {
      if (view === 'delivery') await viewDetail(seq, r.parts[1] || '', false);
      else if (view === 'incidents') await viewList(seq, true, r.params);
      else if (view === 'replay') viewBulk(r.params);
      else await viewList(seq, false, r.params);
    } catch (e) {
      if (seq === state.seq) showError(e, seq);
    }
  }

  function showError(e, seq) {
    if (e instanceof AuthError) {
      viewToken(e.message === 'refused');
      return;
    }
    setMain(
      h('div', { class: 'panel error', role: 'alert' },
        h('h2', {}, 'Something went wrong'),
        h('p', {}, e.message || String(e)),
        h('button', { type: 'button', id: 'retry', onclick: () => render() }, 'Try again')));
    void seq;
  }

  // ---------------------------------------------------------------------
  // The token form.

  function viewToken(refused) {
    setToken(null, false);
    document.body.setAttribute('data-view', 'token');
    const input = h('input', {
      id: 'token', name: 'token', type: 'password', autocomplete: 'off',
      spellcheck: 'false', required: true, 'aria-describedby': 'token-help',
    });
    const keep = h('input', { id: 'token-keep', name: 'keep', type: 'checkbox', checked: true });
    const form = h('form', { id: 'token-form', class: 'panel narrow' },
      h('h2', {}, 'Admin token'),
      h('p', { id: 'token-help' }, refused
        ? 'That token was refused. Enter the admin.token of this authback.'
        : 'This authback has admin.token set. Enter it once: it is sent as an ' +
          'Authorization: Bearer header on /v1 requests, never as a cookie.'),
      h('label', { for: 'token' }, 'Admin token'),
      input,
      h('div', { class: 'check' }, keep,
        h('label', { for: 'token-keep' }, 'Keep it for this browser tab (sessionStorage); otherwise only until the page reloads')),
      h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'token-submit', class: 'primary' }, 'Use token')));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      if (!input.value.trim()) return;
      setToken(input.value.trim(), keep.checked);
      render();
      refreshLive();
    });
    setMain(form);
    input.focus();
  }

  // ---------------------------------------------------------------------
  // Lists: all deliveries with filters, or the order-watch incidents.

  const FILTERS = ['state', 'route', 'session_id', 'reference', 'since', 'until', 'q'];

  function field(id, label, input, help) {
    return h('div', { class: 'field' }, h('label', { for: id }, label), input,
      help ? h('small', { id: id + '-help' }, help) : null);
  }

  function filterForm(incidents, params) {
    const val = (k) => params.get(k) || '';
    const input = (k, label, attrs, help) =>
      field('f-' + k, label, h('input', Object.assign({
        id: 'f-' + k, name: k, value: val(k), autocomplete: 'off', spellcheck: 'false',
        'aria-describedby': help ? 'f-' + k + '-help' : null,
      }, attrs || {})), help);
    const stateSel = h('select', { id: 'f-state', name: 'state' },
      ['', 'pending', 'dead', 'delivered', 'unconfirmed', 'released', 'resolved'].map((s) =>
        h('option', { value: s, selected: s === val('state') }, s || 'any')));
    const since = h('input', { id: 'f-since', name: 'since', type: 'datetime-local', value: toLocalInput(val('since')) });
    const until = h('input', { id: 'f-until', name: 'until', type: 'datetime-local', value: toLocalInput(val('until')) });
    const form = h('form', { id: 'filters', class: 'filters', role: 'search', 'aria-label': 'Filter deliveries' },
      field('search', 'Search', h('input', {
        id: 'search', name: 'q', type: 'search', value: val('q'), autocomplete: 'off', spellcheck: 'false',
        placeholder: 'delivery id, session id or reference',
      })),
      incidents ? null : field('f-state', 'State', stateSel),
      input('route', 'Route'),
      input('session_id', 'Session id'),
      input('reference', 'Reference'),
      field('f-since', 'Received since', since),
      field('f-until', 'Received until', until),
      h('div', { class: 'actions' },
        h('button', { type: 'submit', class: 'primary', id: 'apply' }, 'Apply'),
        h('button', { type: 'button', id: 'clear', onclick: () => go(incidents ? '#/incidents' : '#/deliveries') }, 'Clear')));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const p = new URLSearchParams();
      const fd = new FormData(form);
      for (const k of FILTERS) {
        let v = String(fd.get(k) || '').trim();
        if (k === 'since' || k === 'until') v = fromLocalInput(v);
        if (v) p.set(k, v);
      }
      state.cursors = [];
      const qs = p.toString();
      go((incidents ? '#/incidents' : '#/deliveries') + (qs ? '?' + qs : ''));
    });
    return form;
  }

  function listQuery(params, incidents, extra) {
    const p = new URLSearchParams();
    for (const k of ['state', 'route', 'session_id', 'reference', 'since', 'until', 'cursor']) {
      const v = params.get(k);
      if (v) p.set(k, v);
    }
    if (incidents) p.set('state', 'unconfirmed');
    for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
    p.set('limit', String(PAGE));
    return '/v1/deliveries?' + p.toString();
  }

  // A search term may be a delivery id, a session id or a reference: ask
  // for each and merge, newest first.
  async function search(params, incidents) {
    const q = params.get('q');
    const asks = [
      api('GET', listQuery(params, incidents, { session_id: q })),
      api('GET', listQuery(params, incidents, { reference: q })),
    ];
    if (/^[0-9a-f]{32}$/i.test(q)) {
      asks.push(api('GET', '/v1/deliveries/' + encodeURIComponent(q.toLowerCase()))
        .then((r) => ({ data: [r.data] }))
        .catch((e) => {
          if (e instanceof ApiError && e.status === 404) return { data: [] };
          throw e;
        }));
    }
    const seen = new Map();
    for (const r of await Promise.all(asks)) {
      for (const d of r.data || []) if (d && !seen.has(d.id)) seen.set(d.id, d);
    }
    return [...seen.values()].sort((a, b) => String(b.received_at).localeCompare(String(a.received_at)));
  }

  async function viewList(seq, incidents, params) {
    state.lastList = location.hash.startsWith('#/') ? location.hash : '#/deliveries';
    const key = (incidents ? 'i:' : 'd:') + FILTERS.map((k) => params.get(k) || '').join('|');
    if (key !== state.listKey) {
      state.listKey = key;
      if (!params.get('cursor')) state.cursors = [];
    }
    const title = incidents ? 'Order-watch incidents' : 'Deliveries';
    const intro = incidents
      ? 'Delivered authorizations for which Klarna saw no order placed before order_watch.unconfirmed_after: the customer is charged, but there is no order. Check each in the shop, then resolve it with a note on what was done. One whose last error reads "Klarna unreachable since …" could not be read for the session\'s whole life: its order is unknown, not missing. Authorizations order watch released (cancelled at Klarna, the customer no longer charged) are not here: they are listed under Deliveries with state "released", for the shop to reconcile.'
      : 'Newest first. Filters match exactly; the search box tries a delivery id, a session id and a reference.';
    const form = filterForm(incidents, params);
    const results = h('section', { id: 'results', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Loading…'));
    setMain(h('h2', {}, title), h('p', { class: 'intro' }, intro), form, results);

    let rows;
    let next = null;
    if (params.get('q')) {
      rows = await search(params, incidents);
    } else {
      const r = await api('GET', listQuery(params, incidents));
      rows = r.data || [];
      next = r.headers.get('Next-Cursor');
    }
    if (seq !== state.seq) return;
    const table = incidents ? incidentTable(rows) : deliveryTable(rows);
    const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' });
    const cursor = params.get('cursor');
    if (cursor) {
      pager.append(h('button', {
        type: 'button', id: 'prev', onclick: () => {
          const p = new URLSearchParams(params);
          const back = state.cursors.pop();
          if (back) p.set('cursor', back);
          else p.delete('cursor');
          go((incidents ? '#/incidents' : '#/deliveries') + (p.toString() ? '?' + p : ''));
        },
      }, state.cursors.length ? 'Previous page' : 'First page'));
    }
    if (next) {
      pager.append(h('button', {
        type: 'button', id: 'next', onclick: () => {
          state.cursors.push(cursor || '');
          const p = new URLSearchParams(params);
          p.set('cursor', next);
          go((incidents ? '#/incidents' : '#/deliveries') + '?' + p);
        },
      }, 'Next page'));
    }
    const count = h('p', { class: 'muted', id: 'count' },
      rows.length === 0 ? 'Nothing matches.' :
        rows.length + (rows.length === 1 ? ' delivery' : ' deliveries') +
        (next ? ' on this page; more on the next.' : '.'));
    results.replaceChildren(count, rows.length ? table : '', pager);
    $('#main').removeAttribute('aria-busy');
  }

  function idLink(d) {
    return h('a', {
      href: '#/delivery/' + encodeURIComponent(d.id), class: 'delivery-link mono',
      'data-id': d.id, title: d.id, 'aria-label': 'Delivery ' + d.id,
    }, String(d.id).slice(0, 12) + '…');
  }

  function deliveryTable(rows) {
    return h('div', { class: 'table-wrap' }, h('table', { id: 'deliveries' },
      h('thead', {}, h('tr', {}, ['Delivery', 'State', 'Received', 'Route', 'Reference', 'Session id', 'Token', 'Attempts', 'Next / delivered', 'Order watch', 'Last error']
        .map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows.map((d) => h('tr', { 'data-id': d.id },
        h('td', {}, idLink(d)),
        h('td', {}, badge(d.state)),
        h('td', {}, when(d.received_at)),
        h('td', {}, text(d.route)),
        h('td', { class: 'mono' }, text(d.reference)),
        h('td', { class: 'mono session' }, text(d.session_id)),
        h('td', { class: 'mono' }, d.authorization_token ? '…' + d.authorization_token : '—'),
        h('td', { class: 'num' }, text(d.attempts)),
        h('td', {}, d.state === 'pending' ? when(d.next_attempt_at) : when(d.delivered_at)),
        h('td', {}, d.order_watch ? watchCell(d.order_watch) : '—'),
        h('td', { class: d.last_error ? 'error-cell' : 'error-cell none', title: d.last_error || '' }, text(d.last_error)))))));
  }

  // The watch's state, with its last Read Session error under it: while
  // Klarna fails, "Klarna unreachable since …" rather than a calm badge.
  function watchCell(w) {
    return [badge(w.state), w.last_error
      ? h('div', { class: 'error-text small watch-error', title: w.last_error }, w.last_error)
      : null];
  }

  function incidentTable(rows) {
    return h('div', { class: 'table-wrap' }, h('table', { id: 'incidents' },
      h('thead', {}, h('tr', {}, ['Delivery', 'Session id', 'Reference', 'Route', 'Delivered', 'Watched since', 'Checks', 'Redelivered', 'Last Read Session error']
        .map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows.map((d) => {
        const w = d.order_watch || {};
        return h('tr', { 'data-id': d.id },
          h('td', {}, idLink(d)),
          h('td', { class: 'mono session' }, text(d.session_id)),
          h('td', { class: 'mono' }, text(d.reference)),
          h('td', {}, text(d.route)),
          h('td', {}, when(d.delivered_at)),
          h('td', {}, when(w.started_at)),
          h('td', { class: 'num' }, text(w.checks)),
          h('td', {}, w.redelivered ? 'yes' : 'no'),
          h('td', { class: w.last_error ? 'error-cell' : 'error-cell none', title: w.last_error || '' }, text(w.last_error)));
      }))));
  }

  // ---------------------------------------------------------------------
  // One delivery: its fields, the timeline of attempts, the order watch,
  // and replay with a confirmation step.

  async function viewDetail(seq, id, quiet) {
    if (!quiet) setMain(h('p', { class: 'muted' }, 'Loading…'));
    let d;
    try {
      d = (await api('GET', '/v1/deliveries/' + encodeURIComponent(id))).data;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        if (seq !== state.seq) return;
        setMain(h('div', { class: 'panel' }, h('h2', {}, 'No such delivery'),
          h('p', { class: 'mono' }, id), h('p', {}, h('a', { href: '#/deliveries' }, 'Back to the deliveries'))));
        return;
      }
      throw e;
    }
    if (seq !== state.seq) return;
    const again = JSON.stringify(d);
    if (!quiet || again !== state.lastDetail) {
      state.lastDetail = again;
      setMain(...detail(d, seq));
    }
    // Follow a delivery on its way: refresh while it is pending.
    if (d.state === 'pending') {
      state.timer = setTimeout(() => {
        if (seq === state.seq) viewDetail(seq, id, true).catch((e) => showError(e, seq));
      }, FOLLOW_EVERY_MS);
    }
  }

  // What the backend answered to one attempt: its content type and the
  // first 2 KiB of its body (secrets already redacted by authback), as text.
  function response(a) {
    if (a.response_body === null || a.response_body === undefined) return null;
    const notes = [a.response_content_type ? String(a.response_content_type) : 'no content type'];
    if (a.response_body_base64) notes.push('base64, not text');
    if (a.response_body_truncated) notes.push('first 2 KiB');
    return h('div', { class: 'response' },
      h('div', { class: 'muted small' }, 'Response · ' + notes.join(' · ')),
      a.response_body === ''
        ? h('p', { class: 'muted small' }, 'Empty body.')
        : h('pre', { class: 'response-body' }, String(a.response_body)));
  }

  function dl(pairs) {
    return h('dl', { class: 'facts' }, pairs.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  }

  function detail(d, seq) {
    const w = d.order_watch;
    const attempts = Array.isArray(d.attempts_log) ? d.attempts_log : Array.isArray(d.attempts) ? d.attempts : [];
    const count = typeof d.attempts === 'number' ? d.attempts : attempts.length;
    const head = h('div', { class: 'detail-head' },
      h('h2', {}, 'Delivery ', h('span', { class: 'mono' }, d.id)),
      h('span', { id: 'detail-state', 'data-state': d.state }, badge(d.state)),
      h('div', { class: 'actions' },
        h('a', { href: state.lastList || '#/deliveries', class: 'button', id: 'back' }, 'Back to the list'),
        h('button', { type: 'button', id: 'refresh', onclick: () => render() }, 'Refresh'),
        d.state === 'dead' ? h('button', { type: 'button', id: 'replay', class: 'danger' }, 'Replay…') : null,
        resolvable(d) ? h('button', { type: 'button', id: 'resolve' }, 'Resolve…') : null));

    const facts = dl([
      ['Route', text(d.route)],
      ['Reference', h('span', { class: 'mono' }, text(d.reference))],
      ['Session id', h('span', { class: 'mono', id: 'detail-session' }, text(d.session_id))],
      ['Authorization token', d.authorization_token ? '…' + d.authorization_token + ' (last 4 characters)' : '—'],
      ['Source', text(d.source)],
      ['Attempts', text(count)],
      ['Received', fmtTime(d.received_at)],
      ['Next attempt', d.state === 'pending' ? fmtTime(d.next_attempt_at) : '—'],
      ['Deadline', fmtTime(d.deadline_at)],
      ['Delivered', fmtTime(d.delivered_at)],
      ['Last error', h('span', { class: d.last_error ? 'error-text' : 'error-text none' }, text(d.last_error))],
    ].concat(d.resolution ? [
      ['Resolved', h('span', { id: 'detail-resolved' }, fmtTime(d.resolution.resolved_at))],
      ['Resolution note', h('span', { id: 'detail-note', class: 'note' }, text(d.resolution.note))],
    ] : []));

    const confirmBox = h('div', {
      id: 'replay-box', class: 'confirm', hidden: true, role: 'group', 'aria-labelledby': 'replay-question',
    },
    h('p', { id: 'replay-question' },
      'Replay this dead delivery? It goes back to pending and the backend receives it again, ' +
      'with the same Idempotency-Key (' + d.id + '), on route ' + text(d.route) + '.'),
    h('div', { class: 'actions' },
      h('button', { type: 'button', id: 'replay-confirm', class: 'danger' }, 'Confirm replay'),
      h('button', { type: 'button', id: 'replay-cancel' }, 'Cancel')));

    const timeline = h('section', { 'aria-labelledby': 'attempts-title', class: 'panel' },
      h('h3', { id: 'attempts-title' }, 'Attempts'),
      attempts.length === 0
        ? h('p', { class: 'muted', id: 'no-attempts' }, count ? count + ' attempts; this store keeps no per-attempt log.' : 'No attempt yet.')
        : h('ol', { id: 'attempts', class: 'timeline' }, attempts.map((a, i) => {
          const ok = a.status >= 200 && a.status < 300;
          return h('li', { class: ok ? 'ok' : 'fail' },
            h('div', { class: 'when' }, h('strong', {}, '#' + (i + 1)), ' ', fmtTime(a.at)),
            h('div', {},
              a.status ? h('span', { class: 'status' }, 'HTTP ' + a.status) : h('span', { class: 'status' }, 'no answer'),
              ' · ', text(a.duration_ms), ' ms',
              a.redelivery ? [' · ', h('span', { class: 'badge badge-redelivery' }, 'redelivery')] : null,
              a.retry_in_ms !== null && a.retry_in_ms !== undefined ? ' · retry in ' + fmtSecs(a.retry_in_ms / 1000).trim() : null),
            a.error ? h('div', { class: 'error-text' }, String(a.error)) : null,
            response(a));
        })));

    const watch = h('section', { 'aria-labelledby': 'watch-title', class: 'panel', id: 'watch' },
      h('h3', { id: 'watch-title' }, 'Order watch'),
      !w
        ? h('p', { class: 'muted' }, 'Not watched (order_watch off, or not delivered yet).')
        : dl([
          ['State', badge(w.state)],
          ['Started', fmtTime(w.started_at)],
          ['Next check', w.state === 'watching' ? fmtTime(w.next_check_at) : '—'],
          ['Read Session checks', text(w.checks)],
          ['Redelivered', w.redelivered ? 'yes' : 'no'],
          ['Last error', h('span', { class: w.last_error ? 'error-text' : 'error-text none' }, text(w.last_error))],
        ]));

    const replay = head.querySelector('#replay');
    if (replay) {
      replay.setAttribute('aria-expanded', 'false');
      replay.setAttribute('aria-controls', 'replay-box');
      replay.addEventListener('click', () => {
        confirmBox.hidden = false;
        replay.setAttribute('aria-expanded', 'true');
        confirmBox.querySelector('#replay-confirm').focus();
      });
      confirmBox.querySelector('#replay-cancel').addEventListener('click', () => {
        confirmBox.hidden = true;
        replay.setAttribute('aria-expanded', 'false');
        replay.focus();
      });
      confirmBox.querySelector('#replay-confirm').addEventListener('click', async (e) => {
        e.target.disabled = true;
        try {
          await api('POST', '/v1/deliveries/' + encodeURIComponent(d.id) + '/replay');
          notice('Delivery ' + d.id + ' queued again.', 'ok');
          refreshAfterAction();
        } catch (err) {
          if (err instanceof AuthError) return showError(err, seq);
          notice('Replay failed: ' + err.message, 'bad');
        }
        if (seq === state.seq) {
          state.lastDetail = '';
          viewDetail(seq, d.id, true).then(() => {
            const r = document.getElementById('refresh');
            if (r) r.focus();
          }).catch((er) => showError(er, seq));
        }
      });
    }
    const resolveBox = resolvable(d) ? resolveDialog(d, head.querySelector('#resolve'), seq) : null;
    const columns = h('div', { class: 'columns' }, h('section', { class: 'panel', 'aria-label': 'Facts' }, facts), h('div', {}, timeline, watch));
    return [head, confirmBox, resolveBox, columns].filter(Boolean);
  }

  // A failure an operator may close by hand: dead, released, or delivered
  // with its order watch ended unconfirmed (the API's rule; it answers 409
  // otherwise).
  function resolvable(d) {
    return d.state === 'dead' || d.state === 'released' ||
      (d.state === 'delivered' && !!d.order_watch && d.order_watch.state === 'unconfirmed');
  }

  // Resolve: a confirmation with a note; nothing is sent until "Confirm
  // resolve", and the view is read again after.
  function resolveDialog(d, button, seq) {
    const note = h('textarea', {
      id: 'resolve-note', name: 'note', rows: 3, maxlength: 500, required: true,
      'aria-describedby': 'resolve-question',
    });
    const confirm = h('button', { type: 'button', id: 'resolve-confirm', class: 'primary' }, 'Confirm resolve');
    const cancel = h('button', { type: 'button', id: 'resolve-cancel' }, 'Cancel');
    const box = h('div', { id: 'resolve-box', class: 'confirm', hidden: true, role: 'group', 'aria-labelledby': 'resolve-question' },
      h('p', { id: 'resolve-question' },
        'Resolve this ' + (d.state === 'dead' ? 'dead delivery' : 'unconfirmed order') +
        '? Say what was done about it. It leaves the ' + (d.state === 'dead' ? 'dead list' : 'incident list') +
        ' and is not sent again; Klarna\'s retries are still answered as duplicates.'),
      h('label', { for: 'resolve-note' }, 'Note (what was done)'),
      note,
      h('div', { class: 'actions' }, confirm, cancel));
    button.setAttribute('aria-expanded', 'false');
    button.setAttribute('aria-controls', 'resolve-box');
    button.addEventListener('click', () => {
      box.hidden = false;
      button.setAttribute('aria-expanded', 'true');
      note.focus();
    });
    cancel.addEventListener('click', () => {
      box.hidden = true;
      button.setAttribute('aria-expanded', 'false');
      button.focus();
    });
    confirm.addEventListener('click', async () => {
      if (!note.value.trim()) {
        note.focus();
        notice('Say what was done about it: the note is kept with the delivery.', 'bad');
        return;
      }
      confirm.disabled = true;
      try {
        await api('POST', '/v1/deliveries/' + encodeURIComponent(d.id) + '/resolve', { note: note.value.trim() });
        notice('Delivery ' + d.id + ' resolved.', 'ok');
        refreshLive();
      } catch (err) {
        if (err instanceof AuthError) return showError(err, seq);
        notice('Resolve failed: ' + err.message, 'bad');
      }
      if (seq === state.seq) {
        state.lastDetail = '';
        viewDetail(seq, d.id, true).then(() => {
          const r = document.getElementById('refresh');
          if (r) r.focus();
        }).catch((er) => showError(er, seq));
      }
    });
    return box;
  }

  // ---------------------------------------------------------------------
  // Bulk replay: a dry run shows the count, then a confirmation replays.

  function viewBulk(params) {
    const val = (k) => params.get(k) || '';
    const inp = (k, label, type) => field('b-' + k, label, h('input', {
      id: 'b-' + k, name: k, type: type || 'text', autocomplete: 'off', spellcheck: 'false',
      value: type === 'datetime-local' ? toLocalInput(val(k)) : val(k),
    }));
    const result = h('div', { id: 'bulk-result', 'aria-live': 'polite' });
    const form = h('form', { id: 'bulk', class: 'filters' },
      inp('route', 'Route'),
      inp('session_id', 'Session id'),
      inp('reference', 'Reference'),
      inp('since', 'Received since', 'datetime-local'),
      inp('until', 'Received until', 'datetime-local'),
      h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'dry-run', class: 'primary' }, 'Dry run')));
    const filters = () => {
      const fd = new FormData(form);
      const body = { state: 'dead' };
      for (const k of ['route', 'session_id', 'reference', 'since', 'until']) {
        let v = String(fd.get(k) || '').trim();
        if (k === 'since' || k === 'until') v = fromLocalInput(v);
        if (v) body[k] = v;
      }
      return body;
    };
    // Any change voids the dry run: what is confirmed is what was counted.
    form.addEventListener('input', () => result.replaceChildren());
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const body = filters();
      result.replaceChildren(h('p', { class: 'muted' }, 'Counting…'));
      let r;
      try {
        r = (await api('POST', '/v1/deliveries/replay', Object.assign({ dry_run: true }, body))).data || {};
      } catch (err) {
        if (err instanceof AuthError) return showError(err, state.seq);
        result.replaceChildren(h('p', { class: 'bad', role: 'alert' }, 'Dry run failed: ' + err.message));
        return;
      }
      const n = Number(r.matched) || 0;
      const msg = h('p', { id: 'bulk-count' }, n + (n === 1 ? ' dead delivery matches' : ' dead deliveries match') + ' these filters.' +
        (r.capped ? ' The count is capped: one replay handles at most this many; run it again for the rest.' : ''));
      if (n === 0) {
        result.replaceChildren(msg);
        return;
      }
      const confirm = h('button', { type: 'button', id: 'bulk-confirm', class: 'danger' },
        'Replay ' + n + (n === 1 ? ' delivery' : ' deliveries'));
      const cancel = h('button', { type: 'button', id: 'bulk-cancel', onclick: () => result.replaceChildren() }, 'Cancel');
      confirm.addEventListener('click', async () => {
        confirm.disabled = true;
        try {
          const done = (await api('POST', '/v1/deliveries/replay', Object.assign({ dry_run: false }, body))).data || {};
          result.replaceChildren(h('p', { class: 'ok', id: 'bulk-done' },
            'Replayed ' + text(done.replayed) + ' of ' + text(done.matched) + ' matching dead deliveries.' +
            (done.capped ? ' More remain: run it again.' : '')));
          refreshAfterAction();
        } catch (err) {
          if (err instanceof AuthError) return showError(err, state.seq);
          result.replaceChildren(h('p', { class: 'bad', role: 'alert' }, 'Replay failed: ' + err.message));
        }
      });
      result.replaceChildren(h('div', { class: 'confirm', role: 'group', 'aria-labelledby': 'bulk-count' }, msg,
        h('div', { class: 'actions' }, confirm, cancel)));
      confirm.focus();
    });
    setMain(h('h2', {}, 'Bulk replay of dead deliveries'),
      h('p', { class: 'intro' }, 'Puts every dead delivery matching the filters back to pending. A dry run counts them first; nothing is replayed until you confirm.'),
      form, result);
  }

  // ---------------------------------------------------------------------
  // Live counters (from /metrics) and charts (from /v1/stats/history).

  function parseMetrics(page) {
    const m = new Map();
    for (const line of page.split('\n')) {
      if (!line || line[0] === '#') continue;
      const sp = line.lastIndexOf(' ');
      const name = line.slice(0, sp);
      const v = Number(line.slice(sp + 1));
      if (!isNaN(v)) m.set(name, v);
    }
    return m;
  }

  function sum(m, prefix, needle) {
    let s = 0;
    for (const [k, v] of m) if (k.startsWith(prefix) && (!needle || k.includes(needle))) s += v;
    return s;
  }

  function counters(m, last) {
    const get = (n) => (m.has(n) ? m.get(n) : null);
    const items = [
      ['Ready', get('authback_ready') === 1 ? 'yes' : get('authback_ready') === 0 ? 'no' : '—', get('authback_ready') === 0 ? 'bad' : ''],
      ['Acks / min', last ? String(last.acks_per_min) : '—', ''],
      ['Pending', text(get('authback_delivery_queue_depth')), ''],
      ['Oldest pending', get('authback_oldest_pending_seconds') !== null ? fmtSecs(get('authback_oldest_pending_seconds')).trim() : '—',
        get('authback_oldest_pending_seconds') > 300 ? 'warn' : ''],
      ['Dead', text(get('authback_dead_deliveries')), get('authback_dead_deliveries') > 0 ? 'bad' : ''],
      ['Unconfirmed orders', text(get('authback_orders_unconfirmed')), get('authback_orders_unconfirmed') > 0 ? 'bad' : ''],
      ['In flight', text(get('authback_deliveries_in_flight')), ''],
      ['Delivered (stored)', text(get('authback_deliveries_stored{state="delivered"}')), ''],
      ['Callbacks acked (total)', String(sum(m, 'authback_callbacks_total{', 'outcome="accepted"') + sum(m, 'authback_callbacks_total{', 'outcome="duplicate"')), ''],
    ];
    return h('dl', { class: 'counters', id: 'counters' }, items.map(([k, v, cls]) =>
      h('div', { class: 'counter ' + cls }, h('dt', {}, k), h('dd', {}, v))));
  }

  // A sparkline over the history's span (at most its 60 minutes): a
  // fresh instance is drawn across the whole width, not squeezed right.
  function chart(title, points, key, unit) {
    const W = 200, H = 40, PAD = 3;
    const now = Date.now();
    const first = points.length ? Date.parse(points[0].at) : now;
    const span = Math.min(3600 * 1000, Math.max(60 * 1000, now - first));
    const from = now - span;
    const vals = points.map((p) => p[key]).filter((v) => typeof v === 'number');
    const max = Math.max(1, ...vals);
    const last = points.length ? points[points.length - 1][key] : null;
    const x = (t) => PAD + ((t - from) / span) * (W - 2 * PAD);
    const y = (v) => H - PAD - (v / max) * (H - 2 * PAD - 11);
    const lines = [];
    let seg = [];
    for (const p of points) {
      const t = Date.parse(p.at);
      const v = p[key];
      if (typeof v !== 'number' || isNaN(t) || t < from) {
        if (seg.length) lines.push(seg);
        seg = [];
        continue;
      }
      seg.push([x(t).toFixed(1), y(v).toFixed(1)]);
    }
    if (seg.length) lines.push(seg);
    const fmt = (v) => (unit === 's' ? fmtSecs(v).trim() : String(v));
    const label = title + ' over the last ' + fmtSecs(span / 1000).trim() + ': last sample ' +
      (typeof last === 'number' ? fmt(last) : 'none') + ', highest ' + (vals.length ? fmt(Math.max(...vals)) : 'none');
    const g = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, width: W, height: H, role: 'img', 'aria-label': label, class: 'spark' },
      svg('title', {}, label),
      svg('line', { x1: PAD, y1: H - PAD, x2: W - PAD, y2: H - PAD, class: 'axis' }),
      svg('text', { x: PAD + 1, y: 9, class: 'max' }, 'max ' + fmt(max)),
      svg('text', { x: W - PAD - 1, y: 9, class: 'max end' }, fmtSecs(span / 1000).trim()),
      lines.map((l) => (l.length === 1
        ? svg('circle', { cx: l[0][0], cy: l[0][1], r: 2, class: 'dot' })
        : svg('polyline', { points: l.map((p) => p.join(',')).join(' '), class: 'line' }))));
    return h('figure', { class: 'chart' }, h('figcaption', {}, title), g);
  }

  // After an action: now, and twice more soon, so that its effect (a
  // replayed delivery delivered a moment later) shows without waiting for
  // the next regular refresh.
  function refreshAfterAction() {
    refreshLive();
    for (const ms of [1000, 3000]) setTimeout(refreshLive, ms);
  }

  async function refreshLive() {
    clearTimeout(state.liveTimer);
    state.liveTimer = setTimeout(refreshLive, LIVE_EVERY_MS);
    const live = $('#live');
    let m = new Map();
    try {
      const r = await fetch('/metrics', { credentials: 'omit', cache: 'no-store' });
      if (r.ok) m = parseMetrics(await r.text());
    } catch (_) {
      m = new Map();
    }
    let points = [];
    let historyNote = null;
    if (state.token || !live.hasAttribute('data-needs-token')) {
      try {
        points = ((await api('GET', '/v1/stats/history')).data || {}).points || [];
        live.removeAttribute('data-needs-token');
      } catch (e) {
        if (e instanceof AuthError) live.setAttribute('data-needs-token', '');
        historyNote = e instanceof AuthError ? 'Charts need the admin token.' : 'History unavailable: ' + e.message;
      }
    } else {
      historyNote = 'Charts need the admin token.';
    }
    const last = points.length ? points[points.length - 1] : null;
    const charts = h('div', { class: 'charts' },
      chart('Acks / min', points, 'acks_per_min'),
      chart('Pending', points, 'pending'),
      chart('Oldest pending', points, 'oldest_pending_s', 's'),
      chart('Dead', points, 'dead'),
      chart('Unconfirmed', points, 'unconfirmed'));
    live.replaceChildren(
      h('h2', { class: 'sr-only' }, 'Live counters'),
      counters(m, last),
      historyNote ? h('p', { class: 'muted small' }, historyNote) : charts,
      h('p', { class: 'muted small updated' }, 'Updated ', h('time', { datetime: new Date().toISOString() }, new Date().toLocaleTimeString()),
        ' · every ' + LIVE_EVERY_MS / 1000 + ' s'));
  }

  // ---------------------------------------------------------------------

  function start() {
    $('#forget').hidden = !state.token;
    $('#forget').addEventListener('click', () => {
      setToken(null, false);
      notice('Token forgotten.', 'ok');
      render();
    });
    window.addEventListener('hashchange', () => {
      notice('');
      render();
    });
    render();
    refreshLive();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
}());
