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
 * Further rows (the probe as the score, 'both' inputs): --fit-limits, the linear probe fitted on more positions
 * (nested draws of one collection: nestedSubset); --mlp, the MLP probe (lib/exit/mlp.ts) with that many hidden
 * units, fitted on --mlp-fit-limits positions; each also with per-layer thresholds shaped on the fit data.
 * --no-baseline skips the first table's rows.
 *
 *   node dist/bench/exit_probe.js [--models a,b] [--fit-limit N] [--fit-limits a,b] [--mlp units] [--mlp-fit-limits a,b]
 *     [--mlp-labels agree,stay] [--mlp-l2 a,b] [--no-baseline] [--seeds N] [--cache DIR] [--markdown]
 */
import { DEFAULT_CONFIDENCE } from '../lib/exit/bounds';
import { calibrateLayerThresholds, calibrateThreshold, shapedScores } from '../lib/exit/calibrate';
import { FeatureName } from '../lib/exit/classifier';
import { Trace } from '../lib/exit/collect';
import { documentPart, loadExamples, sample, splitByDocument } from '../lib/exit/data';
import { FeatureExtractor } from '../lib/exit/lens';
import { trainSvm } from '../lib/exit/svm';
import { DEFAULT_FEATURES } from '../lib/exit/train';
import { TransformerModel } from '../lib/model/transformer';
import { boundedThresholdForDrop, calibrationExamples, calibrationProtocolCommand, DocumentScoredTrace, exitOutcome } from './exit_replay';
import { cachedHiddenTraces, collectHiddenTraces, HiddenTraces } from './exit_probe_traces';
import { fitPerLayerLogistic, PROBE_L2_GRID, probeInputs as probeInputsOf } from '../lib/exit/probe';
import { describeMachine, formatMachine } from './machine';
import { fitMlp, flattenMlp, MlpRows, mlpScore, MlpWeights } from '../lib/exit/mlp';

type ProbeLabel = 'stay' | 'agree';
/** A trace with its index in its HiddenTraces (documentPart keeps the objects, so the index survives). */
type Indexed = Trace & { index: number };
type Scored = DocumentScoredTrace;

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

/** The rows of a probe over `traces` (checks of h), labelled; checks at layers outside `layers` get layer -1 (no rows). */
function probeRows(traces: Indexed[], h: Inputs, label: ProbeLabel, layers: number[]): MlpRows {
  const d = h.d;
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
      layer[k] = layers.includes(c.layer) ? c.layer : -1;
      y[k++] = labels[j];
    });
  }
  return { x, layer, y };
}

function fitProbe(traces: Indexed[], h: Inputs, label: ProbeLabel, l2: number, layers: number[]): Probe {
  const r = probeRows(traces, h, label, layers);
  return fitPerLayerLogistic(r.x, h.d, r.layer, r.y, traces[0].nLayer, l2);
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
function chooseProbe(fit: Inputs, label: ProbeLabel, what: string, crossFit = true): { probe: Probe; crossFitted: Float64Array } {
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
  const FOLDS = crossFit ? 5 : 0;
  for (let f = 0; f < FOLDS; f++) {
    const out = new Set(documentPart(traces, { part: f, parts: FOLDS, seed: 1 }));
    const scores = probeScores(fit, fitProbe(traces.filter((t) => !out.has(t)), fit, label, best.l2, layers));
    for (const t of out) t.checks.forEach((_, j) => (crossFitted[fit.first[t.index] + j] = scores[fit.first[t.index] + j]));
  }
  return { probe: fitProbe(traces, fit, label, best.l2, layers), crossFitted };
}

/** The L2 penalties tried for the MLP probe (standardised inputs, objective per row). */
const MLP_L2_GRID = [1e-5, 1e-4, 1e-3];

/**
 * The MLP probe (lib/exit/mlp.ts) with `hidden` units: trained on 4/5 of the FIT stories, early-stopped on the
 * other fifth, for each penalty of MLP_L2_GRID; the one with the lowest held-out log-loss is kept.
 */
function chooseMlp(fit: Inputs, label: ProbeLabel, hidden: number, l2Grid: number[], what: string): MlpWeights {
  const traces = fit.traces as Indexed[];
  const nLayer = traces[0].nLayer;
  const layers = Array.from(new Set(traces.flatMap((t) => t.checks.map((c) => c.layer)))).sort((a, b) => a - b);
  const [inner, held] = splitByDocument(traces, 0.8, 1);
  const [a, h] = [probeRows(inner, fit, label, layers), probeRows(held, fit, label, layers)];
  let best: { model: MlpWeights; loss: number } | undefined;
  for (const l2 of l2Grid) {
    const started = Date.now();
    const m = fitMlp(a, h, fit.d, nLayer, { hidden, l2, seed: 1 });
    log(`${what} '${label}' MLP ${hidden} l2 ${l2}: held-out (fit stories) log-loss ${m.heldOutLoss.toFixed(4)}, epoch ${m.bestEpoch} of ${m.epochs}, ${((Date.now() - started) / 1000).toFixed(0)} s`);
    if (!best || m.heldOutLoss < best.loss) best = { model: m, loss: m.heldOutLoss };
  }
  return best!.model;
}

/** The MLP probe's score at every check of `h`. */
function mlpScores(h: Inputs, m: MlpWeights): Float64Array {
  const out = new Float64Array(h.x.length / h.d);
  const flat = flattenMlp(m);
  const pre = new Float64Array(flat.hidden);
  h.traces.forEach((t, i) =>
    t.checks.forEach((c, j) => {
      const k = h.first[i] + j;
      out[k] = mlpScore(flat, c.layer, h.x.subarray(k * h.d, (k + 1) * h.d), pre);
    }),
  );
  return out;
}

/**
 * The traces of `h` whose examples `sample(all, limit, 1)` draws, where `h` holds those of `sample(all, big, 1)`
 * (loadExamples' --limit draw): the draw is a partial Fisher–Yates shuffle, so the first `limit` picks of the
 * `big` draw are the `limit` draw — nested subsets, the smaller fit sets are parts of the larger.
 */
function nestedSubset(h: HiddenTraces, total: number, big: number, limit: number): HiddenTraces {
  if (limit >= big) return h;
  const keys = Array.from({ length: total }, (_, i) => i);
  const at = new Map(sample(keys, big, 1).map((k, i) => [k, i]));
  const keep = sample(keys, limit, 1).map((k) => at.get(k)!);
  const traces = keep.map((i) => h.traces[i]);
  const first = new Int32Array(traces.length);
  let n = 0;
  traces.forEach((t, i) => ((first[i] = n), (n += t.checks.length)));
  const hidden = new Float32Array(n * h.nEmbd);
  keep.forEach((i, q) => hidden.set(h.hidden.subarray(h.first[i] * h.nEmbd, (h.first[i] + h.traces[i].checks.length) * h.nEmbd), first[q] * h.nEmbd));
  const out = { traces: traces.map((t) => ({ ...t })), hidden, nEmbd: h.nEmbd, first };
  out.traces.forEach((t, i) => ((t as Indexed).index = i));
  return out;
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
    .option('--fit-limits <list>', "the 'fit data' rows: the probe over the hidden state + p1, gap, entropy fitted on these many positions of --train (nested draws)", '')
    .option('--mlp <list>', "the 'MLP' rows: MLP probes with these many hidden units (lib/exit/mlp.ts), fitted on the largest fit draw", '')
    .option('--mlp-fit-limits <list>', 'fit sizes for the MLP rows (default: the largest of --fit-limit, --fit-limits)', '')
    .option('--mlp-labels <list>', "the MLP rows' labels", 'agree,stay')
    .option('--mlp-l2 <list>', "the MLP's L2 penalties tried (the lowest held-out log-loss on the fit stories is kept)", MLP_L2_GRID.join(','))
    .option('--no-baseline', 'skip the rows of the first table (shipped SVM, probe as its fifth input, probe alone at --fit-limit)')
    .parse(process.argv);
  const o = program.opts();
  const window = Number(o.window);
  const target = Number(o.target);
  const seeds = Number(o.seeds);
  const maxDrop = Number(o.maxDrop) / 100;
  const list = (v: string) => (v ? v.split(',').map(Number) : []);
  const fitLimits = list(o.fitLimits);
  const mlpUnits = list(o.mlp);
  const baseLimit = Number(o.fitLimit);
  const largest = Math.max(baseLimit, ...fitLimits);
  const mlpFitLimits = o.mlpFitLimits ? list(o.mlpFitLimits) : [largest];
  const collectLimit = Math.max(largest, ...mlpFitLimits);
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
    const fitAll = cachedHiddenTraces(o.cache, `${name}-fit-${collectLimit}`, nEmbd, collect(o.train, collectLimit));
    const valid = cachedHiddenTraces(o.cache, `${name}-valid`, nEmbd, collect(o.valid));
    const trainPositions = loadExamples(o.train, model.tokenizer, { window, seed: 1 }).length;
    ctx.dispose();
    model.dispose();
    for (const h of [fitAll, valid]) h.traces.forEach((t, i) => ((t as Indexed).index = i));
    const fitOf = (limit: number) => nestedSubset(fitAll, trainPositions, collectLimit, limit);
    const fit = fitOf(baseLimit);
    log(`${name}: fit ${fit.traces.length} of ${trainPositions} positions, valid ${valid.traces.length} positions in ${new Set(valid.traces.map((t) => t.doc)).size} stories, d = ${nEmbd}`);
    // Probes over the hidden state ('hidden'), and over the hidden state and the lens statistics at once ('both').
    type Scores = { fit: Float64Array; crossFitted: Float64Array; valid: Float64Array };
    const probes = new Map<string, Scores>();
    const inputs: [string, boolean, boolean, ProbeLabel[]][] = o.baseline
      ? [
          ['hidden', true, false, ['stay', 'agree']],
          ['both', true, true, ['stay', 'agree']],
          ['lens', false, true, ['agree']],
        ]
      : [];
    for (const [key, hidden, lensStatistics, labels] of inputs) {
      const [inFit, inValid] = [probeInputs(fit, hidden, lensStatistics), probeInputs(valid, hidden, lensStatistics)];
      for (const label of labels) {
        const what = `${name} probe over ${key}`;
        const { probe, crossFitted } = chooseProbe(inFit, label, what);
        probes.set(`${key} ${label}`, { fit: probeScores(inFit, probe), crossFitted, valid: probeScores(inValid, probe) });
      }
    }
    // The new rows: the probe as the score, with more fit data, as an MLP; each also with per-layer thresholds
    // whose shape comes from the fit data ('shaped': one calibrated level).
    type Extra = { what: string; fit: HiddenTraces; fitScores: Float64Array; valid: Float64Array };
    const extras: Extra[] = [];
    const inValidBoth = probeInputs(valid, true, true);
    for (const limit of fitLimits) {
      const f = fitOf(limit);
      const inFit = probeInputs(f, true, true);
      const started = Date.now();
      const { probe } = chooseProbe(inFit, 'agree', `${name} probe over both, fit ${limit}`, false);
      log(`${name} linear probe, fit ${limit}: ${((Date.now() - started) / 1000).toFixed(0)} s`);
      extras.push({ what: `probe alone: hidden state + p1, gap, entropy ('agree' label), fit on ${limit} positions`, fit: f, fitScores: probeScores(inFit, probe), valid: probeScores(inValidBoth, probe) });
    }
    for (const limit of mlpFitLimits.filter(() => mlpUnits.length > 0)) {
      const f = fitOf(limit);
      const inFit = probeInputs(f, true, true);
      for (const units of mlpUnits)
        for (const label of (o.mlpLabels as string).split(',') as ProbeLabel[]) {
          const m = chooseMlp(inFit, label, units, list(o.mlpL2), `${name} fit ${limit}`);
          extras.push({ what: `MLP probe (${units} tanh units): hidden state + p1, gap, entropy ('${label}' label), fit on ${limit} positions`, fit: f, fitScores: mlpScores(inFit, m), valid: mlpScores(inValidBoth, m) });
        }
    }

    type Row = { agreement: number; pruning: number; drop: number };
    const results = new Map<string, Row[]>();
    const add = (key: string, r: Row) => (results.has(key) ? results.get(key)!.push(r) : results.set(key, [r]));
    // Per-layer shapes from the fit data (train.ts 'shaped': the per-layer thresholds meeting the target there).
    const shapes = extras.map((e) => {
      const scored = (e.fit.traces as Indexed[]).map((t) => ({
        nLayer: t.nLayer,
        doc: t.doc,
        final: t.final,
        gold: t.gold,
        checks: t.checks.map((c, j) => ({ layer: c.layer, score: e.fitScores[e.fit.first[t.index] + j], top1: c.top1 })),
      }));
      return calibrateLayerThresholds(calibrationExamples(scored), target).thresholds;
    });
    for (let s = 1; s <= seeds; s++) {
      const cal = documentPart(valid.traces as Indexed[], { part: 0, parts: 2, seed: s });
      const evaluation = documentPart(valid.traces as Indexed[], { part: 1, parts: 2, seed: s });
      const rules: { score: string; of: (t: Indexed) => number[]; shape?: number[] }[] = [];
      // The shipped classifier (linear SVM over p1, gap, entropy, layer), and the same with the probe's logit
      // appended — trained on the probe's in-sample or cross-fitted scores of the fit data.
      const svmRules: [string | undefined, boolean][] = o.baseline
        ? [
            [undefined, false],
            ['stay', false],
            ['agree', false],
            ['stay', true],
            ['agree', true],
          ]
        : [];
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
      const alone: [string, string][] = o.baseline
        ? [
            ['hidden stay', "probe alone: hidden state ('stay' label)"],
            ['hidden agree', "probe alone: hidden state ('agree' label)"],
            ['both stay', "probe alone: hidden state + p1, gap, entropy ('stay' label)"],
            ['both agree', "probe alone: hidden state + p1, gap, entropy ('agree' label)"],
            ['lens agree', "control, no hidden state: per-layer logistic regression over p1, gap, entropy ('agree' label)"],
          ]
        : [];
      for (const [key, what] of alone) {
        const p = probes.get(key)!;
        rules.push({ score: what, of: (t) => t.checks.map((_, j) => p.valid[valid.first[t.index] + j]) });
      }
      extras.forEach((e, q) => rules.push({ score: e.what, of: (t) => t.checks.map((_, j) => e.valid[valid.first[t.index] + j]), shape: shapes[q] }));
      for (const rule of rules) {
        const scored = (traces: Indexed[]): Scored[] =>
          traces.map((t) => {
            const sc = rule.of(t);
            return { nLayer: t.nLayer, doc: t.doc, final: t.final, gold: t.gold, checks: t.checks.map((c, i) => ({ layer: c.layer, score: sc[i], top1: c.top1 })) };
          });
        const [calS, evalS] = [scored(cal), scored(evaluation)];
        const criteria: [string, (layer: number) => number][] = [];
        const single = (threshold: number) => () => threshold;
        criteria.push([`--target ${o.target}, bound over stories`, single(calibrateThreshold(calibrationExamples(calS), target, DEFAULT_CONFIDENCE, 'documents').threshold)]);
        if (rule.shape) {
          // One level on the shaped scores (score − shape[layer]), as train.ts --thresholds shaped.
          const shape = rule.shape;
          const shaped = calibrationExamples(calS).map((e) => ({ ...e, checks: e.checks.map((c) => ({ ...c, score: shapedScores([c.score], [c.layer], shape)[0] })) }));
          const level = calibrateThreshold(shaped, target, DEFAULT_CONFIDENCE, 'documents').threshold;
          criteria.push([`--target ${o.target}, per-layer shape from fit + level, bound over stories`, (layer) => (shape[layer] === Infinity || level === Infinity ? Infinity : shape[layer] + level)]);
        }
        criteria.push([`--max-drop ${o.maxDrop} (stories' upper bound)`, single(boundedThresholdForDrop(calS, maxDrop))]);
        for (const [criterion, at] of criteria) {
          const h = exitOutcome(evalS, at);
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
