// The till's work: charge a code, say the server's answer in large words with a sound, retry a
// charge whose answer never came with the same Idempotency-Key and reverse it when the till gives
// up; this terminal's recent payments with refunds, and today's total. The terminal key is in an
// HttpOnly cookie (sent to /v1/pos only): no request here carries a secret of its own.

import { h, field, clear } from '/app/js/dom.js';
import { t, yen, has } from '/app/js/i18n.js';
import { words } from '/app/js/api.js';
import { cameraReader } from '/app/js/camera.js';

/** Tries of one charge before the till gives up and reverses it, and the wait before each repeat. */
const RETRY_DELAYS_MS = [500, 1000, 2000];
/** How long one attempt may wait for its answer. */
const ATTEMPT_TIMEOUT_MS = 10000;
/** A charge with no answer yet, by its Idempotency-Key: reversed at the next start if the page died. */
const PENDING = 'omamori.till.pending';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One request to the API: `{ok, status, data}`; `status` 0 when no answer came (network down,
 * dropped, or over `timeoutMs`).
 */
export async function request(method, path, body, { key, timeoutMs = ATTEMPT_TIMEOUT_MS } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (key) headers['Idempotency-Key'] = key;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    const response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin', cache: 'no-store', signal: abort.signal,
    });
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    return { ok: response.ok, status: response.status, data };
  } catch {
    return { ok: false, status: 0, data: { code: navigator.onLine ? 'network' : 'offline' } };
  } finally {
    clearTimeout(timer);
  }
}

/** A problem in words a cashier can act on (the till's own sentences first, then the wallet's). */
export function tillWords(status, body, { refund = false } = {}) {
  const code = body?.code;
  if (code === 'switch_engaged' && (refund || body.switch === 'refunds')) return t('till.err.switch_engaged.refunds');
  if (code === 'too_many_attempts') {
    const secs = Math.max(1, Math.ceil(Number(body.retry_after) || 1));
    return t('till.err.too_many_attempts', { retry: secs >= 60 ? `${Math.ceil(secs / 60)} min` : `${secs} s` });
  }
  if (code === 'network') return t('till.err.network');
  if (code && has(`till.err.${code}`)) return t(`till.err.${code}`);
  return words(status, body);
}

let audio = null;

/** A short tone: two rising notes for paid, two low ones for a decline. */
function beep(ok) {
  try {
    audio ??= new AudioContext();
    const notes = ok ? [880, 1320] : [330, 220];
    notes.forEach((freq, i) => {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = freq;
      osc.type = ok ? 'sine' : 'square';
      gain.gain.value = 0.08;
      osc.connect(gain).connect(audio.destination);
      const at = audio.currentTime + i * 0.16;
      osc.start(at);
      osc.stop(at + 0.14);
    });
  } catch {
    // No sound on this device: the words are enough.
  }
}

function pending() {
  try { return JSON.parse(localStorage.getItem(PENDING) || '[]'); } catch { return []; }
}

function setPending(keys) {
  if (keys.length) localStorage.setItem(PENDING, JSON.stringify(keys));
  else localStorage.removeItem(PENDING);
}

/** Reverses the charge made under `key`: `'reversed'`, `'refund'` (too old or refunds stopped) or `'unreachable'`. */
async function reverse(key) {
  for (let i = 0; i < 6; i += 1) {
    const r = await request('POST', '/v1/pos/reversals', { idempotency_key: key });
    if (r.ok) return { outcome: 'reversed' };
    if (r.status === 409 && r.data?.code === 'idempotency_in_progress') { await sleep(1000); continue; }
    if (r.status === 0 || r.status >= 500) { await sleep(RETRY_DELAYS_MS[Math.min(i, 2)]); continue; }
    return { outcome: 'refund', problem: r };
  }
  return { outcome: 'unreachable' };
}

/** Reverses the charges whose answer never came (a page that died mid-charge, a network that was down). */
async function reversePending(ctx) {
  let done = false;
  for (const key of pending()) {
    const { outcome } = await reverse(key);
    if (outcome === 'unreachable') continue;
    setPending(pending().filter((k) => k !== key));
    done = true;
  }
  if (done) ctx.say(t('till.reverse.later'));
}

/** Charges `body` once, however many tries its answer takes: `{answer}` or `{gaveUp}`. */
async function chargeOnce(body, onRetry) {
  const key = crypto.randomUUID();
  setPending([...pending(), key]);
  for (let attempt = 0; attempt <= RETRY_DELAYS_MS.length; attempt += 1) {
    if (attempt > 0) {
      onRetry(attempt);
      await sleep(RETRY_DELAYS_MS[attempt - 1]);
    }
    const r = await request('POST', '/v1/pos/payments', body, { key });
    const noAnswer = r.status === 0 || r.status >= 500
      || (r.status === 409 && r.data?.code === 'idempotency_in_progress');
    if (noAnswer) continue;
    setPending(pending().filter((k) => k !== key));
    return { answer: r };
  }
  return { gaveUp: key };
}

export function render(ctx, terminal) {
  const amount = h('input', { type: 'text', inputmode: 'numeric', pattern: '[0-9]*', required: true, autocomplete: 'off', class: 'amount' });
  const code = h('input', {
    type: 'text', inputmode: 'numeric', required: true, autocomplete: 'off', spellcheck: 'false', maxlength: 40, class: 'code',
    'aria-describedby': 'code-hint',
  });
  const chargeButton = h('button', { type: 'submit', class: 'charge' }, t('till.charge'));
  const form = h('form', { class: 'stack card charge-form' },
    h('h1', { tabindex: -1 }, t('till.charge.title')),
    field(t('till.amount'), amount),
    field(t('till.code'), code),
    h('p', { class: 'hint', id: 'code-hint' }, t('till.code.hint')),
    camera(ctx, (digits) => { code.value = digits; if (amount.value) form.requestSubmit(); else amount.focus(); }),
    chargeButton);
  const total = h('p', { class: 'today-total' });
  const count = h('p', { class: 'hint' });
  const rows = h('tbody');
  const list = h('section', { class: 'card recent', 'aria-labelledby': 'recent-title' },
    h('div', { class: 'recent-head' },
      h('h2', { id: 'recent-title' }, t('till.recent')),
      h('button', { type: 'button', class: 'secondary small', onclick: () => refresh() }, t('till.refresh'))),
    h('div', { class: 'today', role: 'group', 'aria-label': t('till.today') },
      h('p', { class: 'label' }, t('till.today')), total, count),
    h('div', { class: 'scroll' }, h('table', { class: 'payments' },
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, t('till.col.time')), h('th', { scope: 'col', class: 'num' }, t('till.col.amount')),
        h('th', { scope: 'col', class: 'num' }, t('till.col.refunded')), h('th', { scope: 'col' }, t('till.col.status')),
        h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, t('till.refund'))))),
      rows)));
  const unpair = h('button', { type: 'button', class: 'link unpair' }, t('till.unpair'));
  unpair.addEventListener('click', () => ctx.unpaired({ byCashier: true }));
  const dialog = refundDialog(ctx, () => refresh());
  ctx.main.append(h('div', { class: 'till-grid' }, h('div', { class: 'left' }, form, unpair), list), dialog.el);
  amount.focus();

  // Enter in the amount moves on to the code (a scanner types the code and its own Enter).
  amount.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !code.value) { event.preventDefault(); code.focus(); }
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const yenAmount = Number(amount.value.replace(/[,\s¥]/g, ''));
    if (!Number.isInteger(yenAmount) || yenAmount < 1) {
      ctx.warn(t('till.err.invalid_amount'), { big: true });
      beep(false);
      amount.focus();
      return;
    }
    chargeButton.disabled = true;
    const typed = code.value.replace(/\D/g, '');
    ctx.say(t('till.charging', { amount: yen(yenAmount) }));
    try {
      const result = await chargeOnce({ code: typed, amount: yenAmount },
        (n) => ctx.say(t('till.retrying', { n })));
      if (result.answer) {
        const r = result.answer;
        if (r.ok) {
          ctx.say(t('till.paid', { amount: yen(r.data.amount ?? yenAmount) }), { big: true });
          beep(true);
          amount.value = '';
        } else if (r.status === 401) {
          ctx.unpaired();
          return;
        } else {
          ctx.warn(tillWords(r.status, r.data), { big: true });
          beep(false);
        }
      } else {
        ctx.warn(t('till.reversing'), { big: true });
        const { outcome } = await reverse(result.gaveUp);
        if (outcome === 'unreachable') {
          ctx.warn(t('till.reverse.pending'), { big: true });
        } else {
          setPending(pending().filter((k) => k !== result.gaveUp));
          ctx.warn(t(outcome === 'reversed' ? 'till.reversed' : 'till.reverse.failed'), { big: true });
        }
        beep(false);
      }
    } finally {
      chargeButton.disabled = false;
      code.value = '';
      (amount.value ? code : amount).focus();
      refresh();
    }
  });

  let stale = false;
  async function refresh() {
    if (stale) return;
    const r = await request('GET', '/v1/pos/payments?this_terminal=true');
    if (r.status === 401) { ctx.unpaired(); return; }
    if (!r.ok) return;
    showPayments(rows, r.data.items, dialog);
    const today = await todays(r.data);
    total.textContent = yen(today.net);
    count.textContent = t('till.today.count', { n: today.count });
  }
  const online = () => reversePending(ctx).then(refresh);
  window.addEventListener('online', online);
  ctx.onLeave(() => { stale = true; window.removeEventListener('online', online); });
  reversePending(ctx).then(refresh);
}

const tokyoDay = (iso) => new Date(iso).toLocaleDateString('en-CA', { timeZone: 'Asia/Tokyo' });

/** Today's net takings (Asia/Tokyo) of this terminal, reading further pages while they are today's. */
async function todays(first) {
  const day = tokyoDay(new Date().toISOString());
  let page = first;
  let net = 0;
  let count = 0;
  for (let pages = 0; pages < 20; pages += 1) {
    let older = false;
    for (const p of page.items) {
      if (tokyoDay(p.created_at) !== day) { older = true; break; }
      if (p.status === 'succeeded') { net += p.amount - p.refunded; count += 1; }
    }
    if (older || !page.next_cursor) break;
    const r = await request('GET', `/v1/pos/payments?this_terminal=true&cursor=${encodeURIComponent(page.next_cursor)}`);
    if (!r.ok) break;
    page = r.data;
  }
  return { net, count };
}

function timeOf(iso) {
  return new Date(iso).toLocaleTimeString('en-GB', { timeZone: 'Asia/Tokyo', hour: '2-digit', minute: '2-digit' });
}

function showPayments(rows, items, dialog) {
  clear(rows);
  if (!items.length) {
    rows.append(h('tr', {}, h('td', { colspan: 5, class: 'muted' }, t('till.none'))));
    return;
  }
  for (const p of items.slice(0, 20)) {
    const left = p.amount - p.refunded;
    const state = p.status !== 'succeeded' ? 'reversed' : left === 0 ? 'refunded' : 'succeeded';
    const amountId = `amount-${p.payment_id}`;
    const refund = state === 'succeeded'
      ? h('button', { type: 'button', class: 'secondary small', 'aria-describedby': amountId, onclick: () => dialog.open(p) },
        t('till.refund'))
      : '';
    rows.append(h('tr', { 'data-payment': p.payment_id },
      h('td', {}, timeOf(p.created_at)),
      h('td', { class: 'num', id: amountId }, yen(p.amount)),
      h('td', { class: 'num' }, p.refunded ? yen(p.refunded) : '—'),
      h('td', {}, t(`till.status.${state}`)),
      h('td', {}, refund)));
  }
}

/** The refund dialog: an amount (all that is left, unless the cashier changes it) and "Refund". */
function refundDialog(ctx, done) {
  const title = h('h2', { id: 'refund-title' });
  const lead = h('p', { class: 'hint' });
  const amount = h('input', { type: 'text', inputmode: 'numeric', required: true, autocomplete: 'off' });
  const submit = h('button', { type: 'submit' }, t('till.refund'));
  const cancel = h('button', { type: 'button', class: 'secondary' }, t('till.refund.cancel'));
  const problem = h('p', { role: 'alert', class: 'alert' });
  const form = h('form', { class: 'stack' }, title, lead, field(t('till.amount'), amount), problem,
    h('div', { class: 'row' }, submit, cancel));
  const el = h('dialog', { 'aria-labelledby': 'refund-title' }, form);
  let payment = null;
  let key = null;
  cancel.addEventListener('click', () => el.close());
  amount.addEventListener('input', () => { key = null; });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const value = Number(amount.value.replace(/[,\s¥]/g, ''));
    if (!Number.isInteger(value) || value < 1) { problem.textContent = t('till.err.invalid_amount'); return; }
    submit.disabled = true;
    // One key per refund the cashier means: a repeat after a lost answer refunds once.
    key ??= crypto.randomUUID();
    let r;
    for (let attempt = 0; attempt <= RETRY_DELAYS_MS.length; attempt += 1) {
      if (attempt > 0) await sleep(RETRY_DELAYS_MS[attempt - 1]);
      r = await request('POST', `/v1/pos/payments/${encodeURIComponent(payment.payment_id)}/refunds`, { amount: value }, { key });
      if (!(r.status === 0 || r.status >= 500 || (r.status === 409 && r.data?.code === 'idempotency_in_progress'))) break;
    }
    submit.disabled = false;
    if (r.ok) {
      key = null;
      el.close();
      ctx.say(t('till.refunded', { amount: yen(r.data.amount ?? value) }), { big: true });
      beep(true);
      done();
    } else if (r.status === 401) {
      el.close();
      ctx.unpaired();
    } else {
      problem.textContent = tillWords(r.status, r.data, { refund: true });
    }
  });
  return {
    el,
    open(p) {
      payment = p;
      key = null;
      const left = p.amount - p.refunded;
      title.textContent = t('till.refund.title', { amount: yen(p.amount) });
      lead.textContent = t('till.refund.lead', { left: yen(left) });
      amount.value = String(left);
      problem.textContent = '';
      el.showModal();
      amount.select();
    },
  };
}

/** The camera, where the browser reads barcodes itself (`BarcodeDetector`): a payment code's digits. */
function camera(ctx, found) {
  const texts = { start: 'till.camera', stop: 'till.camera.stop', none: 'till.camera.none' };
  const pick = (values) => values.map((v) => v.replace(/\D/g, '')).find((d) => d.length >= 8);
  return cameraReader(ctx, { formats: ['code_128', 'qr_code'], pick, texts }, found) ?? '';
}
