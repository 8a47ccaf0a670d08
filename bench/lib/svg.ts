/**
 * The benchmark's timeline as a hand-written SVG (no chart library): one row per case, three panels per row —
 * answered requests/s, p99 latency (ms) and failed requests per bin — on one time scale for all rows (each row has
 * its own y scale, labelled); every upgrade period is shaded and labelled (`class="upgrade"`, a `<title>` per
 * period). Pure: the same input gives the same text.
 */
import { TARGET_TITLES, type CaseResult } from './report.js';

export interface SvgOptions {
  title?: string;
  /** Width of one panel. */
  panelWidth?: number;
  panelHeight?: number;
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const f = (x: number): string => (Number.isFinite(x) ? (Math.round(x * 10) / 10).toString() : '0');

/** A "nice" upper bound for an axis: 1, 2 or 5 × 10^k, at least `x`. */
export function niceMax(x: number): number {
  if (!(x > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

export function caseLabel(c: Pick<CaseResult, 'target' | 'workers' | 'mode' | 'ballastMb'>): string {
  const target = c.target === 'pool' ? `pool ×${c.workers}` : c.target === 'naive' ? 'naive restart' : 'sd-handoff';
  return `${target}, ${c.mode === 'keepalive' ? 'keep-alive' : 'new conn'}, ${c.ballastMb} MiB`;
}

interface Panel {
  name: string;
  unit: string;
  value: (p: CaseResult['timeline'][number]) => number;
  color: string;
  bars: boolean;
}

const PANELS: Panel[] = [
  { name: 'requests/s', unit: '/s', value: (p) => p.rps, color: '#1f77b4', bars: false },
  { name: 'p99 latency', unit: 'ms', value: (p) => p.p99, color: '#ff7f0e', bars: false },
  { name: 'failed requests', unit: '', value: (p) => p.errors, color: '#d62728', bars: true },
];

export function timelineSvg(cases: CaseResult[], options: SvgOptions = {}): string {
  const pw = options.panelWidth ?? 330;
  const ph = options.panelHeight ?? 70;
  const labelW = 250;
  const gap = 40;
  const rowH = ph + 38;
  const top = 58;
  const width = labelW + PANELS.length * (pw + gap);
  const height = top + cases.length * rowH + 30;
  // One time scale for every row, so the cases compare at a glance.
  const dur = Math.max(1, ...cases.map((c) => c.durationMs));
  const out: string[] = [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="10" y="20" font-size="15" font-weight="bold">${esc(options.title ?? 'sd-handoff: upgrades under load')}</text>`,
    `<text x="10" y="38" fill="#555">Shaded: an upgrade, from the trigger until the new process served and every old one had exited. x: seconds since the load started, the same scale in every row.</text>`,
  ];
  const withBins = cases.find((c) => c.timeline.length > 1)?.timeline;
  const binS = withBins ? (withBins[1]!.t - withBins[0]!.t) / 1000 : undefined;
  PANELS.forEach((p, i) => {
    const name = p.bars && binS ? `${p.name} per ${binS} s` : p.name;
    out.push(`<text x="${labelW + i * (pw + gap)}" y="${top - 6}" font-weight="bold" fill="${p.color}">${esc(name)}</text>`);
  });
  cases.forEach((c, row) => {
    const y0 = top + row * rowH;
    out.push(`<g class="case" data-name="${esc(c.name)}">`);
    out.push(`<text x="10" y="${f(y0 + ph / 2)}" font-weight="bold">${esc(caseLabel(c))}</text>`);
    out.push(`<text x="10" y="${f(y0 + ph / 2 + 14)}" fill="#555">${esc(TARGET_TITLES[c.target])}</text>`);
    PANELS.forEach((p, i) => {
      const x0 = labelW + i * (pw + gap);
      // Its own y scale per row: one noisy case (the machine is shared) would flatten every other row.
      const max = niceMax(Math.max(0, ...c.timeline.map(p.value)));
      const X = (t: number): number => x0 + (Math.min(t, dur) / dur) * pw;
      const Y = (v: number): number => y0 + ph - (Math.min(v, max) / max) * ph;
      out.push(`<rect x="${x0}" y="${y0}" width="${pw}" height="${ph}" fill="#fafafa" stroke="#ccc"/>`);
      c.periods.forEach(([a, b], k) => {
        const xa = X(a);
        const w = Math.max(1.5, X(b) - xa);
        out.push(
          `<rect class="upgrade" x="${f(xa)}" y="${y0}" width="${f(w)}" height="${ph}" fill="#9467bd" fill-opacity="0.18">` +
            `<title>${esc(`${c.target === 'naive' ? 'restart' : 'upgrade'} ${k + 1}: ${f(a / 1000)} s to ${f(b / 1000)} s`)}</title></rect>`,
        );
        if (i === 0) out.push(`<text x="${f(xa + 1)}" y="${y0 + 9}" font-size="8" fill="#6b4c9a">U${k + 1}</text>`);
      });
      const binW = c.timeline.length > 1 ? ((c.timeline[1]!.t - c.timeline[0]!.t) / dur) * pw : pw;
      if (p.bars) {
        for (const pt of c.timeline) {
          const v = p.value(pt);
          if (v <= 0) continue;
          out.push(`<rect x="${f(X(pt.t))}" y="${f(Y(v))}" width="${f(Math.max(1, binW))}" height="${f(y0 + ph - Y(v))}" fill="${p.color}"/>`);
        }
      } else if (c.timeline.length) {
        const pts = c.timeline.map((pt) => `${f(X(pt.t) + binW / 2)},${f(Y(p.value(pt)))}`).join(' ');
        out.push(`<polyline points="${pts}" fill="none" stroke="${p.color}" stroke-width="1.2"/>`);
      }
      out.push(`<text x="${x0 - 3}" y="${y0 + 9}" text-anchor="end" font-size="9" fill="#555">${esc(`${max}${p.unit}`)}</text>`);
      out.push(`<text x="${x0 - 3}" y="${y0 + ph}" text-anchor="end" font-size="9" fill="#555">0</text>`);
      out.push(`<text x="${x0 + pw}" y="${y0 + ph + 11}" text-anchor="end" font-size="9" fill="#555">${f(dur / 1000)} s</text>`);
    });
    out.push('</g>');
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
