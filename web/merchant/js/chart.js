// Charts drawn in the page as inline SVG (no library, no other origin). Elements are made with
// createElementNS and text nodes only, so a store's or an item's name is always shown as text.

const NS = 'http://www.w3.org/2000/svg';

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children) if (c !== undefined && c !== null) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** A round top for the value axis: 1, 2 or 5 times a power of ten, at least `max`. */
function niceTop(max) {
  if (max <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 5, 10]) if (m * p >= max) return m * p;
  return 10 * p;
}

/**
 * A bar chart. `labels` name the columns; `series` are `{name, values, kind: 'bar'|'line'}` (the
 * first is drawn as bars, a second as bars beside it or as a line); `format` writes a value;
 * `label` is the chart's accessible name. Every bar has a tooltip with its label and value.
 */
export function barChart({ labels, series, format = String, label, tickEvery = 1, height = 220 }) {
  const width = Math.max(320, labels.length * 28 + 70);
  const left = 62, bottom = 24, top = 10;
  const plotH = height - bottom - top;
  const plotW = width - left - 8;
  const max = niceTop(Math.max(0, ...series.flatMap((x) => x.values.map((v) => Number(v) || 0))));
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label, preserveAspectRatio: 'xMinYMin meet' });
  svg.append(s('title', {}, label));
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    svg.append(s('line', { class: 'grid', x1: left, x2: width - 8, y1: y, y2: y }));
    svg.append(s('text', { x: left - 6, y: y + 4, 'text-anchor': 'end' }, format((max * i) / 4)));
  }
  svg.append(s('line', { class: 'axis', x1: left, x2: width - 8, y1: top + plotH, y2: top + plotH }));
  const slot = plotW / Math.max(1, labels.length);
  const bars = series.filter((x) => (x.kind ?? 'bar') === 'bar');
  const barW = Math.max(2, (slot * 0.8) / Math.max(1, bars.length));
  const yOf = (v) => top + plotH - (plotH * Math.max(0, Number(v) || 0)) / max;
  labels.forEach((name, i) => {
    const x0 = left + i * slot + slot * 0.1;
    bars.forEach((serie, j) => {
      const v = serie.values[i] ?? 0;
      const y = yOf(v);
      svg.append(s('rect', { class: j === 0 ? 'bar-a' : 'bar-b', x: x0 + j * barW, y, width: Math.max(1, barW - 1), height: top + plotH - y },
        s('title', {}, `${serie.name} · ${name}: ${format(v)}`)));
    });
    if (i % tickEvery === 0) svg.append(s('text', { x: left + i * slot + slot / 2, y: height - 8, 'text-anchor': 'middle' }, name));
  });
  for (const serie of series.filter((x) => x.kind === 'line')) {
    const points = serie.values.map((v, i) => `${left + i * slot + slot / 2},${yOf(v)}`).join(' ');
    svg.append(s('polyline', { class: 'line-b', points }, s('title', {}, serie.name)));
  }
  return svg;
}
