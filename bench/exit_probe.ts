/**
 * Issue 14's untried feature family, "a learned summary of the hidden state", measured on recorded traces: linear
 * probes on the decision row's hidden state at the check layer, fitted by L2-regularised logistic regression
 * (lib/exit/logistic.ts, per layer: lib/exit/probe.ts fitPerLayerLogistic) on the fit positions of train.txt only,
 * predicting
 *   - 'stay': this check's top-1 equals the full-depth answer and stays equal at every later check, or
 *   - 'agree': this check's top-1 equals the full-depth answer (the SVM's own label).
 * Inputs: the hidden state scaled to unit RMS, h / sqrt(mean(h²)) — what the final RMSNorm computes before its
 * per-dimension gain, which a linear probe absorbs into its weights — ('hidden'); the same followed by p1, gap,
 * entropy ('both': the runtime's 'probe' feature, probe.ts probeInputs); and, as the control that tells what the
 * hidden state adds, p1, gap, entropy alone ('lens'). One probe per checked layer. Each probe's logit is used
 *   - as a fifth input to the shipped classifier (linear SVM over p1, gap, entropy, layer + probe), the SVM fitted
 *     on the probe's in-sample scores of the fit data or on its cross-fitted ones (each fifth of the fit stories
 *     scored by the probe fitted on the other four fifths), or
 *   - as the score itself (what `train-exit --features probe` runs: an SVM over one feature ranks as the feature),
 * and each score gets the shipped calibration: one threshold, --target against the 95% bound over the calibration
 * stories; and the paper's criterion (--max-drop: the stories' 95% upper bound on the accuracy drop).
 *
 * Protocol = bench/exit_calibration.ts: fit on --fit-limit positions of train.txt, for s = 1..--seeds calibrate on
 * every position of valid.txt's story half 0/2 (seed s) and evaluate on every position of half 1/2. The probe's
 * regularisation is chosen on the fit data alone (a split of its stories). Decisions are replayed on full-depth
 * traces (exact counts).
 *
 *   node dist/bench/exit_probe.js [--models a,b] [--fit-limit N] [--seeds N] [--cache DIR] [--markdown]
 */
import { DEFAULT_CONFIDENCE } from '../lib/exit/bounds';
import { calibrateThreshold, calibrateThresholdForDrop, CalibrationExample } from '../lib/exit/calibrate';
import { FeatureName } from '../lib/exit/classifier';
import { Trace } from '../lib/exit/collect';
import { documentPart, loadExamples, splitByDocument } from '../lib/exit/data';
import { FeatureExtractor } from '../lib/exit/lens';
import { trainSvm } from '../lib/exit/svm';
import { DEFAULT_FEATURES } from '../lib/exit/train';
import { TransformerModel } from '../lib/model/transformer';
import { calibrationProtocolCommand, exitOutcome, ScoredTrace } from './exit_replay';
import { cachedHiddenTraces, collectHiddenTraces, HiddenTraces } from './exit_probe_traces';
import { fitPerLayerLogistic, PROBE_L2_GRID, probeInputs as probeInputsOf } from '../lib/exit/probe';
import { describeMachine, formatMachine } from './machine';

type ProbeLabel = 'stay' | 'agree';
/** A trace with its index in its HiddenTraces (documentPart keeps the objects, so the index survives). */
type Indexed = Trace & { index: number };
interface Scored extends ScoredTrace {
  doc: number;
}

const log = (s: string) => process.stderr.write(s + '\n');
const pct = (x: number) => (x * 100).toFixed(2) + '%';

/** Per check: 1 where the probe's label holds. */
function probeLabels(t: Trace, label: ProbeLabel): (0 | 1)[] {
  const agree = t.checks.map((c) => (c.top1 === t.final ? 1 : 0) as 0 | 1);
  if (label === 'agree') return agree;
  let stays = true;
  const out = agree.slice();
  for (let i = out.length - 1; i >= 0; i--) out[i] = (stays = stays && agree[i] === 1) ? 1 : 0;
  return out;
}

/** A probe's inputs: `d` numbers per check, checks indexed like the HiddenTraces' (first[i] + j). */
interface Inputs {
  x: Float64Array;
  d: number;
  first: Int32Array;
  traces: Trace[];
}

/**
 * Per check: h / sqrt(mean(h²)) (with `hidden`), followed by the lens statistics p1, gap, entropy (with
 * `lensStatistics`): a probe over the hidden state, over the hidden state and the lens at once, or — the control
 * that tells what the hidden state adds — over the lens statistics alone.
 */
function probeInputs(h: HiddenTraces, hidden: boolean, lensStatistics: boolean): Inputs {
  const e = h.nEmbd;
  const d = (hidden ? e : 0) + (lensStatistics ? 3 : 0);
  const x = new Float64Array((h.hidden.length / e) * d);
  const both = new Float64Array(e + 3);
  h.traces.forEach((t, i) =>
    t.checks.forEach((c, j) => {
      const k = h.first[i] + j;
      // The runtime's inputs (probe.ts probeInputs: unit-RMS hidden state, p1, gap, entropy), or a part of them.
      probeInputsOf(h.hidden.subarray(k * e, (k + 1) * e), c, e, both);
      x.set(hidden && lensStatistics ? both : hidden ? both.subarray(0, e) : both.subarray(e), k * d);
    }),
  );
  return { x, d, first: h.first, traces: h.traces };
}

/** One logistic probe per layer (probe.ts fitPerLayerLogistic): score = weights[layer]·x + bias[layer] on raw inputs. */
interface Probe {
  weights: Float64Array[];
  bias: number[];
}

function fitProbe(traces: Indexed[], h: Inputs, label: ProbeLabel, l2: number, layers: number[]): Probe {
  const d = h.d;
  const nLayer = traces[0].nLayer;
  const n = traces.reduce((a, t) => a + t.checks.length, 0);
  const x = new Float64Array(n * d);
  const layer = new Int32Array(n);
  const y = new Uint8Array(n);
  let k = 0;
  for (const t of traces) {
    const labels = probeLabels(t, label);
    t.checks.forEach((c, j) => {
      const o = (h.first[t.index] + j) * d;
      x.set(h.x.subarray(o, o + d), k * d);
      // Layers outside `layers` get no rows (zero weights).
      layer[k] = layers.includes(c.layer) ? c.layer : -1;
      y[k++] = labels[j];
    });
  }
  return fitPerLayerLogistic(x, d, layer, y, nLayer, l2);
}

/** The probe's logit at every check of every trace of `h` (indexed like h.hidden's checks). */
function probeScores(h: Inputs, probe: Probe): Float64Array {
  const { d, x: z } = h;
  const out = new Float64Array(z.length / d);
  h.traces.forEach((t, i) =>
    t.checks.forEach((c, j) => {
      const k = h.first[i] + j;
      const w = probe.weights[c.layer];
      let s = probe.bias[c.layer];
      for (let q = 0; q < d; q++) s += w[q] * z[k * d + q];
      out[k] = s;
    }),
  );
  return out;
}

/** Mean log-loss of `scores` against the probe label over `traces`. */
function logLoss(traces: Indexed[], h: Inputs, scores: Float64Array, label: ProbeLabel): number {
  let loss = 0;
  let n = 0;
  for (const t of traces) {
    const labels = probeLabels(t, label);
    t.checks.forEach((_, j) => {
      const s = scores[h.first[t.index] + j];
      loss += (s > 0 ? s + Math.log1p(Math.exp(-s)) : Math.log1p(Math.exp(s))) - (labels[j] ? s : 0);
      n++;
    });
  }
  return loss / n;
}

const L2_GRID = PROBE_L2_GRID;

/**
 * The probe with the L2 penalty of L2_GRID whose held-out log-loss is lowest on a 80/20 split of the FIT stories,
 * refitted on all of them; and its cross-fitted scores on the fit data (each fifth of the fit stories scored by the
 * probe fitted on the other four fifths), so that a classifier trained on the fit data sees the probe as it will
 * on new stories, not its in-sample fit.
 */
function chooseProbe(fit: Inputs, label: ProbeLabel, what: string): { probe: Probe; crossFitted: Float64Array } {
  const traces = fit.traces as Indexed[];
  const layers = Array.from(new Set(traces.flatMap((t) => t.checks.map((c) => c.layer)))).sort((a, b) => a - b);
  const [inner, held] = splitByDocument(traces, 0.8, 1);
  let best = { l2: L2_GRID[0], loss: Infinity };
  for (const l2 of L2_GRID) {
    const loss = logLoss(held, fit, probeScores(fit, fitProbe(inner, fit, label, l2, layers)), label);
    log(`${what} '${label}' l2 ${l2}: held-out (fit stories) log-loss ${loss.toFixed(4)}`);
    if (loss < best.loss) best = { l2, loss };
  }
  log(`${what} '${label}': l2 ${best.l2}`);
  const crossFitted = new Float64Array(fit.x.length / fit.d);
  const FOLDS = 5;
  for (let f = 0; f < FOLDS; f++) {
    const out = new Set(documentPart(traces, { part: f, parts: FOLDS, seed: 1 }));
    const scores = probeScores(fit, fitProbe(traces.filter((t) => !out.has(t)), fit, label, best.l2, layers));
    for (const t of out) t.checks.forEach((_, j) => (crossFitted[fit.first[t.index] + j] = scores[fit.first[t.index] + j]));
  }
  return { probe: fitProbe(traces, fit, label, best.l2, layers), crossFitted };
}

const toExamples = (s: Scored[]): CalibrationExample[] =>
  s.map((t) => ({ nLayer: t.nLayer, doc: t.doc, checks: t.checks.map((c) => ({ layer: c.layer, score: c.score, agrees: c.top1 === t.final })) }));

function dropThreshold(s: Scored[], maxDrop: number): number {
  const examples = s.map((t) => ({
    nLayer: t.nLayer,
    doc: t.doc,
    fullCorrect: t.final === t.gold,
    checks: t.checks.map((c) => ({ layer: c.layer, score: c.score, agrees: c.top1 === t.final, correct: c.top1 === t.gold })),
  }));
  return calibrateThresholdForDrop(examples, maxDrop, DEFAULT_CONFIDENCE).threshold;
}

/**
 * The lens features of every check (DEFAULT_FEATURES), with the probe's logit appended (the feature 'probe') when
 * `probe` is given.
 */
function featureRows(t: Indexed, h: HiddenTraces, probe: Float64Array | undefined): number[][] {
  const x = new FeatureExtractor(DEFAULT_FEATURES);
  x.begin();
  return t.checks.map((c, j) => {
    const row = Array.from(x.next(c, c.layer, t.nLayer));
    if (probe) row.push(probe[h.first[t.index] + j]);
    return row;
  });
}

async function main(): Promise<void> {
  const program = calibrationProtocolCommand('exit_probe', { help: 'keep the traces and hidden states here, and reuse them', default: '/tmp/adainfer-exit-probe' })
    .parse(process.argv);
  const o = program.opts();
  const window = Number(o.window);
  const target = Number(o.target);
  const seeds = Number(o.seeds);
  const maxDrop = Number(o.maxDrop) / 100;
  const machine = formatMachine(describeMachine());
  for (const line of machine) log(line);
  const lines = [
    `| model | score | criterion | agreement min (mean) over ${seeds} seeds | pruning mean (min) | accuracy drop mean (max), points |`,
    '|---|---|---|---|---|---|',
  ];
  const schedule = { minLayer: 1, checkEvery: 1 };
  const lens = { mode: 'faithful' as const };
  for (const file of (o.models as string).split(',')) {
    const model = TransformerModel.load(file);
    const name = model.config.name;
    const nEmbd = model.config.nEmbd;
    const ctx = model.createContext({ contextSize: window, batchSize: window, threads: 1, lensK: 16 });
    const collect = (data: string, limit?: number) => () =>
      collectHiddenTraces(ctx, loadExamples(data, model.tokenizer, { window, limit, seed: limit ? 1 : 2 }), schedule, lens);
    const fit = cachedHiddenTraces(o.cache, `${name}-fit`, nEmbd, collect(o.train, Number(o.fitLimit)));
    const valid = cachedHiddenTraces(o.cache, `${name}-valid`, nEmbd, collect(o.valid));
    ctx.dispose();
    model.dispose();
    for (const h of [fit, valid]) h.traces.forEach((t, i) => ((t as Indexed).index = i));
    log(`${name}: fit ${fit.traces.length} positions, valid ${valid.traces.length} positions in ${new Set(valid.traces.map((t) => t.doc)).size} stories, d = ${nEmbd}`);
    // Probes over the hidden state ('hidden'), and over the hidden state and the lens statistics at once ('both').
    type Scores = { fit: Float64Array; crossFitted: Float64Array; valid: Float64Array };
    const probes = new Map<string, Scores>();
    const inputs: [string, boolean, boolean, ProbeLabel[]][] = [
      ['hidden', true, false, ['stay', 'agree']],
      ['both', true, true, ['stay', 'agree']],
      ['lens', false, true, ['agree']],
    ];
    for (const [key, hidden, lensStatistics, labels] of inputs) {
      const [inFit, inValid] = [probeInputs(fit, hidden, lensStatistics), probeInputs(valid, hidden, lensStatistics)];
      for (const label of labels) {
        const what = `${name} probe over ${key}`;
        const { probe, crossFitted } = chooseProbe(inFit, label, what);
        probes.set(`${key} ${label}`, { fit: probeScores(inFit, probe), crossFitted, valid: probeScores(inValid, probe) });
      }
    }

    type Row = { agreement: number; pruning: number; drop: number };
    const results = new Map<string, Row[]>();
    const add = (key: string, r: Row) => (results.has(key) ? results.get(key)!.push(r) : results.set(key, [r]));
    for (let s = 1; s <= seeds; s++) {
      const cal = documentPart(valid.traces as Indexed[], { part: 0, parts: 2, seed: s });
      const evaluation = documentPart(valid.traces as Indexed[], { part: 1, parts: 2, seed: s });
      const rules: { score: string; of: (t: Indexed) => number[] }[] = [];
      // The shipped classifier (linear SVM over p1, gap, entropy, layer), and the same with the probe's logit
      // appended — trained on the probe's in-sample or cross-fitted scores of the fit data.
      const svmRules: [string | undefined, boolean][] = [
        [undefined, false],
        ['stay', false],
        ['agree', false],
        ['stay', true],
        ['agree', true],
      ];
      for (const [label, crossFitted] of svmRules) {
        const probe = label ? probes.get(`hidden ${label}`)! : undefined;
        const X: number[][] = [];
        const y: (0 | 1)[] = [];
        for (const t of fit.traces as Indexed[]) {
          featureRows(t, fit, probe && (crossFitted ? probe.crossFitted : probe.fit)).forEach((r) => X.push(r));
          t.checks.forEach((c) => y.push(c.top1 === t.final ? 1 : 0));
        }
        const features: FeatureName[] = probe ? [...DEFAULT_FEATURES, 'probe'] : DEFAULT_FEATURES;
        const svm = trainSvm(X, y, { kernel: 'linear', classWeight: 'balanced', features, seed: s });
        rules.push({
          score: label
            ? `linear SVM: p1, gap, entropy, layer + probe ('${label}' label, SVM fitted on its ${crossFitted ? 'cross-fitted' : 'in-sample'} scores)`
            : 'linear SVM: p1, gap, entropy, layer (shipped default)',
          of: (t) => featureRows(t, valid, probe?.valid).map((r) => svm.score(r)),
        });
      }
      for (const [key, what] of [
        ['hidden stay', "probe alone: hidden state ('stay' label)"],
        ['hidden agree', "probe alone: hidden state ('agree' label)"],
        ['both stay', "probe alone: hidden state + p1, gap, entropy ('stay' label)"],
        ['both agree', "probe alone: hidden state + p1, gap, entropy ('agree' label)"],
        ['lens agree', "control, no hidden state: per-layer logistic regression over p1, gap, entropy ('agree' label)"],
      ]) {
        const p = probes.get(key)!;
        rules.push({ score: what, of: (t) => t.checks.map((_, j) => p.valid[valid.first[t.index] + j]) });
      }
      for (const rule of rules) {
        const scored = (traces: Indexed[]): Scored[] =>
          traces.map((t) => {
            const sc = rule.of(t);
            return { nLayer: t.nLayer, doc: t.doc, final: t.final, gold: t.gold, checks: t.checks.map((c, i) => ({ layer: c.layer, score: sc[i], top1: c.top1 })) };
          });
        const [calS, evalS] = [scored(cal), scored(evaluation)];
        const criteria: [string, number][] = [
          [`--target ${o.target}, bound over stories`, calibrateThreshold(toExamples(calS), target, DEFAULT_CONFIDENCE, 'documents').threshold],
          [`--max-drop ${o.maxDrop} (stories' upper bound)`, dropThreshold(calS, maxDrop)],
        ];
        for (const [criterion, threshold] of criteria) {
          const h = exitOutcome(evalS, () => threshold);
          add(`${rule.score} | ${criterion}`, { agreement: h.agreement, pruning: h.pruning, drop: h.drop });
          log(`${name} seed ${s} ${rule.score} | ${criterion}: held out agreement ${pct(h.agreement)} pruning ${pct(h.pruning)} drop ${(h.drop * 100).toFixed(2)}`);
        }
      }
    }
    for (const [key, rows] of results) {
      const mean = (f: (r: Row) => number) => rows.reduce((a, r) => a + f(r), 0) / rows.length;
      const row =
        `| ${name} | ${key} | ${pct(Math.min(...rows.map((r) => r.agreement)))} (${pct(mean((r) => r.agreement))}) | ` +
        `${pct(mean((r) => r.pruning))} (${pct(Math.min(...rows.map((r) => r.pruning)))}) | ${(mean((r) => r.drop) * 100).toFixed(2)} (${(Math.max(...rows.map((r) => r.drop)) * 100).toFixed(2)}) |`;
      lines.push(row);
      log(row);
    }
  }
  if (o.markdown) process.stdout.write([...machine.map((l) => `<!-- ${l} -->`), ...lines].join('\n') + '\n');
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exitCode = 1;
});
