// The only way the wallet builds markup: elements and text nodes, never HTML strings, so that
// whatever a user, a store or a notice supplies is shown as text.

/** An element: `attrs` are attributes, `on*` functions are listeners; children are nodes or text. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === 'value') {
      el.value = value;
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

let fields = 0;

/** A labelled field: the label names the control through `for` (so its name is exactly the label's text). */
export function field(labelText, control) {
  if (!control.id) control.id = `field-${++fields}`;
  return h('div', { class: 'field' }, h('label', { for: control.id }, labelText), control);
}

/** Empties an element. */
export function clear(el) {
  el.replaceChildren();
  return el;
}
