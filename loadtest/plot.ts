// A self-contained SVG of a concurrency sweep: two panels, TTFT and ITL, each plotting the median and p99
// latency (milliseconds, y) against output token throughput (tokens/s, x), one point per concurrency level.

import type { SweepPoint } from "./run.ts";

const PANEL_W = 420;
const PANEL_H = 300;
const MARGIN = { left: 64, right: 16, top: 40, bottom: 48 };

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Round tick step (1, 2 or 5 times a power of ten) giving about `target` ticks over [0, max]. */
export function niceStep(max: number, target = 5): number {
  if (!(max > 0) || !Number.isFinite(max)) return 1;
  const raw = max / target;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const m = raw / pow;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * pow;
}

function label(v: number): string {
  if (v === 0) return "0";
  if (Math.abs(v) >= 1000) return `${+(v / 1000).toFixed(2)}k`;
  return String(+v.toPrecision(3));
}

interface Series {
  name: string;
  color: string;
  dashed: boolean;
  values: number[];
}

function panel(x0: number, title: string, xs: number[], concurrencies: number[], series: Series[]): string {
  const w = PANEL_W - MARGIN.left - MARGIN.right;
  const h = PANEL_H - MARGIN.top - MARGIN.bottom;
  const finite = (v: number[]) => v.filter((n) => Number.isFinite(n));
  // 5% headroom so the largest point and its label stay inside the frame.
  const xTop = 1.05 * Math.max(0, ...finite(xs));
  const yTop = 1.05 * Math.max(0, ...series.flatMap((s) => finite(s.values)));
  const xStep = niceStep(xTop);
  const yStep = niceStep(yTop);
  const xMax = Math.max(xStep, Math.ceil(xTop / xStep) * xStep);
  const yMax = Math.max(yStep, Math.ceil(yTop / yStep) * yStep);
  const px = (v: number) => x0 + MARGIN.left + (v / xMax) * w;
  const py = (v: number) => MARGIN.top + h - (v / yMax) * h;
  const out: string[] = [];
  out.push(
    `<text x="${x0 + MARGIN.left + w / 2}" y="22" text-anchor="middle" font-weight="bold">${
      escapeXml(title)
    }</text>`,
  );
  for (let v = 0; v <= xMax + 1e-9; v += xStep) {
    out.push(
      `<line x1="${px(v)}" y1="${MARGIN.top}" x2="${px(v)}" y2="${MARGIN.top + h}" stroke="#e5e5e5"/>`,
    );
    out.push(`<text x="${px(v)}" y="${MARGIN.top + h + 16}" text-anchor="middle">${label(v)}</text>`);
  }
  for (let v = 0; v <= yMax + 1e-9; v += yStep) {
    out.push(
      `<line x1="${x0 + MARGIN.left}" y1="${py(v)}" x2="${x0 + MARGIN.left + w}" y2="${
        py(v)
      }" stroke="#e5e5e5"/>`,
    );
    out.push(`<text x="${x0 + MARGIN.left - 6}" y="${py(v) + 4}" text-anchor="end">${label(v)}</text>`);
  }
  out.push(
    `<rect x="${x0 + MARGIN.left}" y="${MARGIN.top}" width="${w}" height="${h}" fill="none" stroke="#444"/>`,
    `<text x="${x0 + MARGIN.left + w / 2}" y="${
      PANEL_H - 10
    }" text-anchor="middle">output throughput (tokens/s)</text>`,
    `<text transform="translate(${x0 + 16} ${
      MARGIN.top + h / 2
    }) rotate(-90)" text-anchor="middle">latency (ms)</text>`,
  );
  series.forEach((s, k) => {
    const pts = xs.map((x, i) => [x, s.values[i], concurrencies[i]]).filter(([x, y]) =>
      Number.isFinite(x) && Number.isFinite(y)
    );
    const path = pts.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(" ");
    out.push(
      `<polyline points="${path}" fill="none" stroke="${s.color}" stroke-width="2"${
        s.dashed ? ' stroke-dasharray="6 4"' : ""
      }/>`,
    );
    for (const [x, y, c] of pts) {
      out.push(
        `<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="3.5" fill="${s.color}"><title>${
          escapeXml(`${s.name} at concurrency ${c}: ${y.toFixed(1)} ms, ${x.toFixed(1)} tok/s`)
        }</title></circle>`,
      );
      if (k === series.length - 1) {
        out.push(
          `<text x="${px(x).toFixed(1)}" y="${
            (py(y) - 8).toFixed(1)
          }" text-anchor="middle" font-size="10">c=${c}</text>`,
        );
      }
    }
    const ly = MARGIN.top + 14 + k * 16;
    const lx = x0 + MARGIN.left + 10;
    out.push(
      `<line x1="${lx}" y1="${ly - 4}" x2="${lx + 22}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2"${
        s.dashed ? ' stroke-dasharray="6 4"' : ""
      }/>`,
      `<text x="${lx + 28}" y="${ly}">${escapeXml(s.name)}</text>`,
    );
  });
  return out.join("\n");
}

/** The sweep as an SVG document. */
export function sweepSvg(points: readonly SweepPoint[], title = "Latency against throughput"): string {
  if (points.length === 0) throw new RangeError("sweepSvg: no sweep points");
  const xs = points.map((p) => p.summary.outputThroughput);
  const cs = points.map((p) => p.concurrency);
  const width = PANEL_W * 2;
  const height = PANEL_H + 30;
  const body = [
    panel(0, "TTFT", xs, cs, [
      { name: "median", color: "#1f77b4", dashed: false, values: points.map((p) => p.summary.ttftMs.median) },
      { name: "p99", color: "#d62728", dashed: true, values: points.map((p) => p.summary.ttftMs.p99) },
    ]),
    panel(PANEL_W, "ITL", xs, cs, [
      { name: "median", color: "#1f77b4", dashed: false, values: points.map((p) => p.summary.itlMs.median) },
      { name: "p99", color: "#d62728", dashed: true, values: points.map((p) => p.summary.itlMs.p99) },
    ]),
  ];
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<g transform="translate(0 24)">`,
    ...body,
    `</g>`,
    `<text x="${width / 2}" y="18" text-anchor="middle" font-size="14">${escapeXml(title)}</text>`,
    `</svg>`,
    "",
  ].join("\n");
}
