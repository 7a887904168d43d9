// Pieces every console screen uses: problems in words, tables, the reason dialog, who did what.
// Markup is built with `h` (elements and text nodes only), so nothing the API returns is parsed.

import { h, field } from '/app/js/dom.js';
import { t, has, when } from '/app/js/i18n.js';
import { words as walletWords } from '/app/js/api.js';

/** A problem in words an operator can act on: the console's own sentence, else the shared one. */
export function words(problem) {
  const code = problem?.code;
  if (code && has(`console.err.${code}`)) return t(`console.err.${code}`);
  return walletWords(problem?.status ?? 0, problem?.body ?? { code });
}

/** A table: `columns` are header texts, `rows` arrays of cells (text or nodes). */
export function table(columns, rows, { caption, className = 'grid' } = {}) {
  return h('div', { class: 'scroll' },
    h('table', { class: className },
      caption ? h('caption', {}, caption) : null,
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows.length
        ? rows.map((r) => h('tr', {}, r.map((cell) => h('td', {}, cell ?? ''))))
        : h('tr', {}, h('td', { colspan: columns.length, class: 'muted' }, t('console.none'))))));
}

/**
 * A `dialog` asking for a reason: answers the reason typed, or null when cancelled. `extra` are
 * more fields shown above the reason.
 */
export function askReason({ title, lead, submit, extra = [] }) {
  return new Promise((resolve) => {
    const reason = h('textarea', { rows: 3, required: true, maxlength: 500 });
    const ok = h('button', { type: 'submit' }, submit);
    const cancel = h('button', { type: 'button', class: 'secondary' }, t('console.cancel'));
    const form = h('form', { method: 'dialog', class: 'stack' },
      h('h2', {}, title), lead ? h('p', { class: 'hint' }, lead) : null,
      ...extra, field(t('console.reason'), reason), h('div', { class: 'row' }, ok, cancel));
    const dialog = h('dialog', { 'aria-label': title }, form);
    const done = (value) => { dialog.close(); dialog.remove(); resolve(value); };
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      if (reason.value.trim()) done(reason.value.trim());
      else reason.focus();
    });
    cancel.addEventListener('click', () => done(null));
    dialog.addEventListener('cancel', (e) => { e.preventDefault(); done(null); });
    document.body.append(dialog);
    dialog.showModal();
    reason.focus();
  });
}

let operators = new Map();

/** Remembers the operators' e-mails, so that `who` can name them. */
export function knowOperators(items) {
  operators = new Map(items.map((o) => [`operator:${o.operator_id}`, o.email]));
}

/** Who an audit actor is, in words: an operator's e-mail, automatic containment, or the actor. */
export function who(actor) {
  if (!actor) return t('console.by.unknown');
  if (actor === 'system:containment') return t('console.by.system');
  return operators.get(actor) ?? actor;
}

/** A time in the operator's language, in Japan's time zone, saying so (operators may be abroad). */
export function at(iso) {
  return iso ? `${when(iso)} JST` : '';
}

/** The switch names of the API, in the order the form offers them. */
export const SWITCHES = ['topups', 'payments', 'card_linking', 'logins', 'signups', 'refunds'];

/** A switch's name in words ("top-ups"). */
export const switchWords = (name) => (has(`console.switch.${name}`) ? t(`console.switch.${name}`) : name);

/** A scope in words ("everywhere", "one user usr_…"). */
export function scopeWords(scope) {
  const kind = scope?.kind ?? 'global';
  const kindWords = has(`console.scope.${kind}`) ? t(`console.scope.${kind}`) : kind;
  return kind === 'global' ? kindWords : t('console.scope.of', { kind: kindWords, id: scope.id });
}
