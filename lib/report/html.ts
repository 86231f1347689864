/**
 * report.html of `adainfer eval-tasks`: one self-contained page (inline CSS and SVG, no script, no external
 * URL; it opens offline) with the results table and the plots, drawn as Vega-Lite specifications compiled to
 * Vega and rendered to SVG in Node (no browser):
 *
 *   - accuracy (and agreement with full depth) vs pruning ratio across the policy's thresholds, per task,
 *     with the measured operating point;
 *   - the exit-layer histogram of each task;
 *   - wall-clock speedup vs pruning ratio, per task, beside the layer-count ideal L / (L − pruned).
 */
import type * as Vega from 'vega';
import type * as VegaLite from 'vega-lite';
import { AdaInferError } from '../errors';
import { Results, TaskResult } from './schema';

/** A Vega-Lite specification as plain JSON (checked by vega-lite's compiler when rendered). */
export type Spec = Record<string, unknown>;

/**
 * vega and vega-lite (~27 MB) are optional peer dependencies: only this report uses them, so an installed
 * adainfer does not carry them. Loaded on first use; absent, the report fails with MISSING_PACKAGE naming them.
 */
function loadVega(): { vega: typeof Vega; vegaLite: typeof VegaLite } {
  const load = (name: string): unknown => {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      return require(name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw err;
      throw new AdaInferError(
        'MISSING_PACKAGE',
        `report.html is drawn with vega and vega-lite, which are optional and not installed (package '${name}' is missing): ` +
          'run `npm install vega vega-lite` beside adainfer',
        { cause: err },
      );
    }
  };
  return { vega: load('vega') as typeof Vega, vegaLite: load('vega-lite') as typeof VegaLite };
}

/** Renders a Vega-Lite specification to an SVG string. */
export async function renderSvg(spec: Spec): Promise<string> {
  const { vega, vegaLite } = loadVega();
  const view = new vega.View(vega.parse(vegaLite.compile(spec as unknown as VegaLite.TopLevelSpec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** The plots' shared look (fonts, axes), for every page drawn with renderSvg. */
export const CONFIG = { font: 'sans-serif', view: { stroke: '#ccc' }, axis: { labelFontSize: 11, titleFontSize: 12 }, legend: { labelFontSize: 11 } };

export function accuracySpec(r: Results): Spec {
  const values: Record<string, unknown>[] = [];
  for (const [name, t] of Object.entries(r.tasks)) {
    for (const p of t.sweep ?? []) {
      values.push({ task: name, pruningRatio: p.pruningRatio, value: p.accuracy, series: 'accuracy (gold), sweep' });
      values.push({ task: name, pruningRatio: p.pruningRatio, value: p.agreement, series: 'agreement with full depth, sweep' });
    }
    values.push({ task: name, pruningRatio: t.pruningRatio, value: t.accuracyExit, series: 'accuracy (gold), measured run' });
    values.push({ task: name, pruningRatio: 0, value: t.chance, series: 'chance' });
  }
  const x = { field: 'pruningRatio', type: 'quantitative', title: 'pruning ratio', scale: { domain: [0, 1] }, axis: { format: '%', tickCount: 5 } };
  const y = { field: 'value', type: 'quantitative', title: 'accuracy / agreement', scale: { domain: [0, 1] }, axis: { format: '%', tickCount: 5 } };
  const color = {
    field: 'series',
    type: 'nominal',
    title: null,
    scale: {
      domain: ['accuracy (gold), sweep', 'agreement with full depth, sweep', 'accuracy (gold), measured run', 'chance'],
      range: ['#4c78a8', '#f58518', '#222222', '#999999'],
    },
    legend: { orient: 'bottom', columns: 2, labelLimit: 320 },
  };
  const only = (...series: string[]) => ({ filter: { field: 'series', oneOf: series } });
  // Up to three facets a row, sized so that a row fills 600-1000 px, never narrower than the two-column
  // legend below it (~580 px): one task gets one wide plot, not a 220 px strip.
  const columns = Math.max(1, Math.min(3, Object.keys(r.tasks).length));
  const facetWidth = [600, 440, 300][columns - 1];
  return {
    title: 'Accuracy vs pruning ratio across thresholds',
    config: CONFIG,
    data: { values },
    facet: { field: 'task', type: 'nominal', title: null },
    columns,
    spec: {
      width: facetWidth,
      height: 160,
      layer: [
        {
          transform: [only('accuracy (gold), sweep', 'agreement with full depth, sweep'), { calculate: '-datum.pruningRatio', as: 'order' }],
          mark: { type: 'line', point: { size: 14 }, strokeWidth: 1.5, clip: true },
          encoding: { x, y, color, order: { field: 'pruningRatio', type: 'quantitative' } },
        },
        { transform: [only('chance')], mark: { type: 'rule', strokeDash: [3, 3] }, encoding: { y, color } },
        { transform: [only('accuracy (gold), measured run')], mark: { type: 'point', shape: 'diamond', size: 110, filled: true }, encoding: { x, y, color } },
      ],
    },
  };
}

export function histogramSpec(name: string, t: TaskResult): Spec {
  const values = t.exitHistogram.map((count, i) => ({ layers: i + 1, count }));
  return {
    title: `${t.title} (${name}): layers run per example`,
    width: 260,
    height: 160,
    config: CONFIG,
    data: { values },
    mark: { type: 'bar', color: '#4c78a8' },
    encoding: {
      x: { field: 'layers', type: 'ordinal', title: 'layers run (exit layer)', axis: { labelAngle: 0 } },
      y: { field: 'count', type: 'quantitative', title: 'examples', axis: { tickMinStep: 1, format: 'd' } },
    },
  };
}

export function speedupSpec(r: Results): Spec {
  const points = Object.entries(r.tasks)
    .filter(([, t]) => t.speedup !== null)
    .map(([name, t]) => ({ task: name, pruningRatio: t.pruningRatio, speedup: t.speedup }));
  const maxR = Math.min(0.9, Math.max(0.5, ...points.map((p) => p.pruningRatio + 0.05)));
  const ideal = Array.from({ length: 41 }, (_, i) => {
    const pr = (maxR * i) / 40;
    return { pruningRatio: pr, speedup: 1 / (1 - pr) };
  });
  const x = { field: 'pruningRatio', type: 'quantitative', title: 'pruning ratio', scale: { domain: [0, maxR] }, axis: { format: '%' } };
  return {
    title: 'Wall-clock speedup vs pruning ratio',
    width: 520,
    height: 300,
    config: CONFIG,
    layer: [
      {
        data: { values: ideal },
        mark: { type: 'line', strokeDash: [6, 4], color: '#888' },
        encoding: { x, y: { field: 'speedup', type: 'quantitative', title: 'speedup (full-depth time / exit time)' } },
      },
      {
        data: { values: [{ speedup: 1 }] },
        mark: { type: 'rule', color: '#bbb' },
        encoding: { y: { field: 'speedup', type: 'quantitative' } },
      },
      {
        data: { values: points },
        mark: { type: 'point', filled: true, size: 90, opacity: 0.85 },
        encoding: { x, y: { field: 'speedup', type: 'quantitative' }, color: { field: 'task', type: 'nominal' }, shape: { field: 'task', type: 'nominal' } },
      },
    ],
  };
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

function table(r: Results): string {
  const head = ['task', 'n', 'shots', 'accuracy full', 'accuracy exit', 'chance', 'agreement', 'mean layers', 'pruning ratio', 'work pruned', 'time full', 'time exit', 'speedup', 'exit policy', 'scored label tokens'];
  const rows = Object.entries(r.tasks).map(([name, t]) => {
    const labels = t.labels.map((l) => `${l.word} → ${JSON.stringify(l.piece)}${l.multiToken ? '*' : ''}`).join(', ');
    const policy = `${t.exit.kind}${t.exit.threshold !== null ? ` ≥ ${t.exit.threshold.toPrecision(4)}` : t.exit.kind === 'never' ? '' : ' (never fires)'}`;
    const cells = [
      `${t.title} <span class="dim">(${escapeHtml(name)})</span>`,
      String(t.n),
      String(t.shots),
      pct(t.accuracyFull),
      pct(t.accuracyExit),
      pct(t.chance),
      pct(t.agreement),
      `${t.meanLayers.toFixed(2)} / ${r.model.layers}`,
      pct(t.pruningRatio),
      pct(t.tokenWeightedPruningRatio),
      `${t.secondsFull.toFixed(3)} s`,
      `${t.secondsExit.toFixed(3)} s`,
      t.speedup === null ? '—' : `${t.speedup.toFixed(2)}×`,
      escapeHtml(policy),
      escapeHtml(labels),
    ];
    return `<tr data-task="${escapeHtml(name)}">${cells.map((c) => `<td>${c}</td>`).join('')}</tr>`;
  });
  // In a scrolling box of its own: on a narrow window the wide table scrolls, not the page.
  return `<div class="table-scroll"><table id="results"><thead><tr>${head.map((h) => `<th>${h}</th>`).join('')}</tr></thead><tbody>${rows.join('')}</tbody></table></div>`;
}

function notes(r: Results): string {
  const items = Object.entries(r.tasks).flatMap(([name, t]) => [
    ...t.notes.map((n) => `<li><b>${escapeHtml(name)}</b>: ${escapeHtml(n)}</li>`),
    `<li><b>${escapeHtml(name)}</b>: demonstrations and exit training from ${escapeHtml(t.sources.demo)}; evaluated on ${escapeHtml(t.sources.eval)}</li>`,
  ]);
  return `<ul class="notes">${items.join('')}</ul>`;
}

/** A rendered plot with its caption. */
export function figure(id: string, svg: string, caption: string): string {
  return `<figure class="plot" id="${escapeHtml(id)}">${svg}<figcaption>${escapeHtml(caption)}</figcaption></figure>`;
}

/** The pages' stylesheet (inline: a page must open offline). */
export const CSS = `
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.dim { color: #777; } .settings { color: #444; }
table { border-collapse: collapse; font-size: 13px; }
.table-scroll { max-width: 100%; overflow-x: auto; } th, td { border: 1px solid #ddd; padding: 4px 7px; text-align: right; }
th { background: #f3f3f3; } td { white-space: nowrap; } td:last-child { white-space: normal; min-width: 16em; } td:first-child, td:nth-last-child(-n+2), th:first-child, th:nth-last-child(-n+2) { text-align: left; }
figure.plot { display: inline-block; margin: 8px 16px 8px 0; vertical-align: top; max-width: 100%; }
figure.plot svg { max-width: 100%; height: auto; }
figcaption { font-size: 12px; color: #555; max-width: 560px; }
.warn { background: #fff7e0; border: 1px solid #f0d48a; padding: 8px 12px; }
.notes { font-size: 13px; }`;

/** The whole page. */
export async function buildReportHtml(r: Results): Promise<string> {
  const tasks = Object.entries(r.tasks);
  const accuracy = await renderSvg(accuracySpec(r));
  const speedup = await renderSvg(speedupSpec(r));
  const histograms: string[] = [];
  for (const [name, t] of tasks) histograms.push(figure(`hist-${name}`, await renderSvg(histogramSpec(name, t)), `Exit layers of ${t.title}: ${t.n} examples, mean ${t.meanLayers.toFixed(2)} of ${r.model.layers} layers.`));
  const s = r.settings;
  const nearChance = tasks.filter(([, t]) => t.accuracyFull < t.chance + 0.1).map(([n]) => n);
  const sweepScore = [...new Set(tasks.map(([, t]) => t.exit.score))].join(', ');
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>adainfer eval-tasks: ${escapeHtml(r.model.name)}</title>
<style>${CSS}</style></head><body>
<h1>AdaInfer on in-context tasks: ${escapeHtml(r.model.name)}</h1>
<p class="settings">${r.model.layers} layers, vocabulary ${r.model.vocab} (${escapeHtml(r.model.tokenizer)}), context ${r.model.contextLength}, fingerprint <code>${escapeHtml(r.model.fingerprint.slice(0, 23))}…</code><br>
shots ${s.shots}, seed ${s.seed}, exit <code>${escapeHtml(s.exit)}</code>${s.target !== null ? `, target agreement ${s.target}` : ''}, lens ${s.mode}, checks from layer ${s.minLayer} every ${s.checkEvery}, limit ${s.limit ?? 'none'}, ${s.threads} threads, ${escapeHtml(s.createdAt)}</p>
${nearChance.length > 0 ? `<p class="warn">Full-depth accuracy is within 10 points of chance on ${escapeHtml(nearChance.join(', '))}: this model does not do ${nearChance.length > 1 ? 'these tasks' : 'this task'}, so those figures test the machinery (prompts, scoring, exits, timing), not the method.</p>` : ''}
<h2>Results</h2>
${table(r)}
<p class="dim">Accuracy: share of examples answered with the gold label (full depth / with the exit policy). Agreement: exit answer = full-depth answer. Pruning ratio: (L − mean layers run) / L, a mean over examples; work pruned: the same weighted by prompt tokens (Σ tokens·skipped layers / Σ tokens·L), which the wall clock follows more closely when prompt lengths vary. Times: wall clock of the whole prompt through the layer loop, full depth and exit alternating on the same examples. * = the label has several tokens; it is scored by the first.</p>
<h2>Accuracy vs pruning ratio</h2>
${figure('plot-accuracy', accuracy, `Per task, every threshold of the exit score (${sweepScore}) replayed on the evaluated examples: accuracy against gold and agreement with full depth, against the share of layers skipped; the diamond is the measured run, the dotted line chance.`)}
<h2>Exit-layer histograms</h2>
${histograms.join('\n')}
<h2>Speedup vs pruning ratio</h2>
${figure('plot-speedup', speedup, 'Measured wall-clock speedup per task; dashed: the layer-count ideal L / (L − pruned layers), which the lens checks and the work outside the layers (embedding, label scoring) keep a run below, and which a run can pass when its long prompts exit earlier than its short ones (see work pruned). Times are wall clock: other load on the machine shows in them.')}
<h2>Notes</h2>
${notes(r)}
</body></html>
`;
}
