// The Overview's charts: plain SVG bars, one per minute, drawn here (no chart library).
// The SVG is an image with a text alternative; the numbers are in the table beside it.
import { html } from 'htm/preact';

const W = 600, H = 120, PAD = 4;

export function BarChart({ title, series, color }) {
  const max = Math.max(1, ...series.map((p) => p.value));
  const total = series.reduce((a, p) => a + p.value, 0);
  const bw = (W - PAD * 2) / Math.max(1, series.length);
  return html`<figure class="chart">
    <figcaption><span class="chart-title">${title}</span> <span class="chart-total">${total.toLocaleString('en-US')}</span> in the last hour</figcaption>
    <svg viewBox=${`0 0 ${W} ${H}`} preserveAspectRatio="none" role="img"
      aria-label=${`${title}: ${total} in the last hour, at most ${max === 1 && total === 0 ? 0 : max} in one minute`}>
      <line x1="0" y1=${H - 1} x2=${W} y2=${H - 1} class="axis" />
      ${series.map((p, i) => {
        const h = p.value === 0 ? 0 : Math.max(2, (p.value / max) * (H - PAD * 2));
        return html`<rect class=${'bar ' + color} x=${PAD + i * bw + 0.5} y=${H - 1 - h} width=${Math.max(1, bw - 1)} height=${h}><title>${p.label}: ${p.value}</title></rect>`;
      })}
    </svg>
  </figure>`;
}
