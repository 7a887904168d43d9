// The camera as a barcode reader, where the browser offers `BarcodeDetector`: a button that starts
// and stops it, and a video of what it sees. Shared by the wallet's Scan and the till's Charge.

import { h } from './dom.js';
import { t } from './i18n.js';

/**
 * A camera control, or `null` when this browser cannot read barcodes itself. `formats` are the
 * `BarcodeDetector` formats; `pick(rawValues)` answers the value to hand to `found`, or nothing to go
 * on looking; `texts` names the catalogue keys of the button (`start`, `stop`) and of the failure
 * (`none`).
 */
export function cameraReader(ctx, { formats, pick, texts }, found) {
  if (!('BarcodeDetector' in window) || !navigator.mediaDevices?.getUserMedia) return null;
  const video = h('video', { playsinline: true, muted: true, hidden: true, class: 'camera' });
  const button = h('button', { type: 'button', class: 'secondary' }, t(texts.start));
  let stream = null;
  const stop = () => {
    stream?.getTracks().forEach((track) => track.stop());
    stream = null;
    video.hidden = true;
    button.textContent = t(texts.start);
  };
  ctx.onLeave(stop);
  button.addEventListener('click', async () => {
    if (stream) return stop();
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' } });
      video.srcObject = stream;
      video.hidden = false;
      await video.play();
      button.textContent = t(texts.stop);
      const detector = new window.BarcodeDetector({ formats });
      const look = async () => {
        if (!stream) return;
        const codes = await detector.detect(video).catch(() => []);
        const value = pick(codes.map((c) => c.rawValue));
        if (value) { stop(); found(value); } else requestAnimationFrame(look);
      };
      look();
    } catch {
      stop();
      ctx.warn(t(texts.none));
    }
  });
  return h('div', { class: 'stack' }, button, video);
}
