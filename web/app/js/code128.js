// A small Code 128 encoder (ISO/IEC 15417) drawn as SVG: set C for runs of digits (a payment code),
// set B otherwise. Our own code, so there is nothing to vendor.

// Bar and space widths of symbols 0 to 106 (106, the stop, has a seventh bar).
const PATTERNS = [
  '212222', '222122', '222221', '121223', '121322', '131222', '122213', '122312', '132212', '221213',
  '221312', '231212', '112232', '122132', '122231', '113222', '123122', '123221', '223211', '221132',
  '221231', '213212', '223112', '312131', '311222', '321122', '321221', '312212', '322112', '322211',
  '212123', '212321', '232121', '111323', '131123', '131321', '112313', '132113', '132311', '211313',
  '231113', '231311', '112133', '112331', '132131', '113123', '113321', '133121', '313121', '211331',
  '231131', '213113', '213311', '213131', '311123', '311321', '331121', '312113', '312311', '332111',
  '314111', '221411', '431111', '111224', '111422', '121124', '121421', '141122', '141221', '112214',
  '112412', '122114', '122411', '142112', '142211', '241211', '221114', '413111', '241112', '134111',
  '111242', '121142', '121241', '114212', '124112', '124211', '411212', '421112', '421211', '212141',
  '214121', '412121', '111143', '111341', '131141', '114113', '114311', '411113', '411311', '113141',
  '114131', '311141', '411131', '211412', '211214', '211232', '2331112',
];
const START_B = 104;
const START_C = 105;
const CODE_B = 100;
const STOP = 106;

/** The symbol values for `text` (printable ASCII), start and check symbol included. */
export function symbols(text) {
  if (!/^[ -~]*$/.test(text)) throw new Error('Code 128 set B takes printable ASCII only');
  const digits = /^\d+$/.test(text);
  const values = [];
  if (digits && text.length >= 2) {
    values.push(START_C);
    const even = text.length - (text.length % 2);
    for (let i = 0; i < even; i += 2) values.push(Number(text.slice(i, i + 2)));
    if (even < text.length) values.push(CODE_B, text.charCodeAt(even) - 32);
  } else {
    values.push(START_B);
    for (const ch of text) values.push(ch.charCodeAt(0) - 32);
  }
  const check = values.reduce((sum, v, i) => sum + v * (i === 0 ? 1 : i), 0) % 103;
  values.push(check, STOP);
  return values;
}

/** How many modules wide the barcode of `text` is, quiet zones included. */
export function modules(text) {
  let n = 20;
  for (const v of symbols(text)) for (const w of PATTERNS[v]) n += Number(w);
  return n;
}

/**
 * The widest module (in CSS pixels) that lets the barcode fit in `room` CSS pixels while every bar
 * is a whole number of device pixels: a scaled barcode has bars of uneven width, which scanners
 * misread. Never under 2 device pixels (1-pixel bars fail too): on a screen of 1 device pixel per
 * CSS pixel the barcode may then be wider than `room` (the page lets it overflow its card).
 */
export function moduleFor(text, room, pixelRatio = 1) {
  const devicePixels = Math.max(2, Math.floor((room * pixelRatio) / modules(text)));
  return devicePixels / pixelRatio;
}

/** An SVG document of the barcode, `module` pixels per narrowest bar, with quiet zones. */
export function svg(text, { module = 2, height = 80 } = {}) {
  const quiet = 10 * module;
  let x = quiet;
  const bars = [];
  for (const v of symbols(text)) {
    [...PATTERNS[v]].forEach((w, i) => {
      const width = Number(w) * module;
      if (i % 2 === 0) bars.push(`<rect x="${x}" y="0" width="${width}" height="${height}"/>`);
      x += width;
    });
  }
  const total = x + quiet;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${total}" height="${height}" viewBox="0 0 ${total} ${height}" shape-rendering="crispEdges">`
    + `<rect width="${total}" height="${height}" fill="#fff"/><g fill="#000">${bars.join('')}</g></svg>`;
}

/** The barcode as a `data:` URL for an `<img>`. */
export function dataUrl(text, opts) {
  return 'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(svg(text, opts));
}
