/**
 * Threshold calibration for the exit rule "stop at the first checked layer whose classifier score is >=
 * threshold". The classifier is trained once; the threshold picks the point on the accuracy/speed curve:
 * calibrateThreshold finds the cheapest threshold that keeps agreement with full-depth answers above a
 * target on held-out examples.
 *
 * Definitions used throughout: an exit at 0-based layer l uses l + 1 layers; an example that never exits
 * uses nLayer layers and agrees by definition. agreement = (examples that agree) / (examples);
 * meanLayers = (Σ layers used) / (examples).
 */
import { OptionError } from '../errors';
import { clopperPearsonLower, clusteredLowerFromSums, studentTQuantile } from './bounds';

/**
 * What the lower bound counts as independent: 'positions' — every example (the plain Clopper–Pearson bound);
 * 'documents' — the examples' documents (`doc`), whose positions may agree or fail together (bounds.ts,
 * clusteredLowerBound: Korn–Graubard's effective sample size).
 */
export type BoundUnit = 'positions' | 'documents';

export interface CalibrationExample {
  nLayer: number;
  /** The example's document; needed by the 'documents' bound. */
  doc?: number;
  /** Accuracy calibration (calibrateThresholdForDrop): whether the full-depth answer is the gold token. */
  fullCorrect?: boolean;
  /** One entry per checked layer, increasing layer order (0-based layer index). */
  checks: {
    layer: number;
    score: number;
    agrees: boolean /* stopping here gives the same answer as full depth */;
    /** Accuracy calibration: whether stopping here gives the gold token. */
    correct?: boolean;
  }[];
}

export interface ThresholdPoint {
  threshold: number;
  agreement: number;
  meanLayers: number;
}

/** Exit rule: stop at the first check whose score >= threshold; with no such check, run to full depth (agrees). */
export function simulateExit(
  examples: CalibrationExample[],
  threshold: number,
): { agreement: number; meanLayers: number; histogram: number[] /* count per exit layer, index = layers used − 1 */ } {
  checkExamples(examples);
  if (typeof threshold !== 'number' || Number.isNaN(threshold)) {
    throw new OptionError('threshold', `must be a number, got ${String(threshold)}`);
  }
  let maxLayers = 0;
  for (const example of examples) maxLayers = Math.max(maxLayers, example.nLayer);
  const histogram = new Array<number>(maxLayers).fill(0);
  let agreeCount = 0;
  let totalLayers = 0;
  for (const example of examples) {
    let layersUsed = example.nLayer;
    let agrees = true;
    for (const check of example.checks) {
      if (check.score >= threshold) {
        layersUsed = check.layer + 1;
        agrees = check.agrees;
        break;
      }
    }
    histogram[layersUsed - 1]++;
    totalLayers += layersUsed;
    if (agrees) agreeCount++;
  }
  return { agreement: agreeCount / examples.length, meanLayers: totalLayers / examples.length, histogram };
}

/**
 * Smallest-cost threshold whose agreement on `examples` is >= target (maximizes pruning subject to the
 * constraint); +Infinity if none (= never exit). With `confidence`, the constraint is on the one-sided
 * Clopper–Pearson lower bound of the agreement at that confidence instead of the agreement itself (the bound
 * must reach target: a held-out promise rather than an in-sample one; at +Infinity the bound is
 * (1 − confidence)^(1/n), so small sets may not reach a high target and never exit). Cost is meanLayers, which can only fall as the threshold
 * falls; among thresholds of equal cost the largest is returned, the most conservative on unseen data.
 * The returned threshold is always one of the scores (or +Infinity), so "score >= threshold" reproduces
 * the reported agreement and meanLayers exactly on these examples. Since agreement at +Infinity is 1, any
 * target in [0, 1] is met. O(N log N) for N checks in all. `unit` 'documents' puts the constraint on the bound
 * over the examples' documents (BoundUnit; every example needs `doc`), never above the one over positions.
 */
export function calibrateThreshold(
  examples: CalibrationExample[],
  target: number,
  confidence?: number,
  unit: BoundUnit = 'positions',
): { threshold: number; agreement: number; meanLayers: number } {
  checkExamples(examples);
  if (typeof target !== 'number' || !(target >= 0 && target <= 1)) {
    throw new OptionError('target', `must be a number in [0, 1], got ${String(target)}`);
  }
  const n = examples.length;
  const needed = confidence === undefined ? 0 : agreeingNeeded(n, target, confidence);
  let best: ThresholdPoint | undefined;
  let bestTotalLayers = Infinity;
  if (unit === 'documents') {
    if (confidence === undefined) throw new OptionError('confidence', "the 'documents' bound needs a confidence");
    // The documents' bound is never above the positions' one (its effective sample size is at most n), so only
    // thresholds that meet the positions' bound are candidates; the cheapest candidate whose documents' bound
    // reaches target wins (ties in cost: the largest threshold, as below).
    const candidates: { threshold: number; agreeCount: number; totalLayers: number; xx: number; xn: number }[] = [];
    const clusters = documentClusters(examples);
    sweepThresholds(
      examples,
      (threshold, agreeCount, totalLayers, docs) => {
        if (agreeCount >= needed) candidates.push({ threshold, agreeCount, totalLayers, xx: docs!.xx, xn: docs!.xn });
      },
      clusters,
    );
    candidates.sort((a, b) => a.totalLayers - b.totalLayers || b.threshold - a.threshold);
    for (const c of candidates) {
      const lower = clusteredLowerFromSums({ x: c.agreeCount, n, xx: c.xx, xn: c.xn, nn: clusters.nn, k: clusters.sizes.length }, confidence);
      if (lower >= target) return { threshold: c.threshold, agreement: c.agreeCount / n, meanLayers: c.totalLayers / n };
    }
    return { threshold: Infinity, agreement: 1, meanLayers: meanFullDepth(examples) };
  }
  sweepThresholds(examples, (threshold, agreeCount, totalLayers) => {
    const agreement = agreeCount / n;
    // Thresholds arrive in decreasing order, so strict < keeps the largest threshold of a cost tie.
    if (totalLayers < bestTotalLayers && (confidence === undefined ? agreement >= target : agreeCount >= needed)) {
      bestTotalLayers = totalLayers;
      best = { threshold, agreement, meanLayers: totalLayers / n };
    }
  });
  return best ?? { threshold: Infinity, agreement: 1, meanLayers: meanFullDepth(examples) };
}

/** Examples grouped by document: each example's cluster index, the clusters' sizes, and Σ size². */
interface DocumentClusters {
  clusterOf: Int32Array;
  sizes: number[];
  nn: number;
}

function documentClusters(examples: CalibrationExample[]): DocumentClusters {
  const index = new Map<number, number>();
  const sizes: number[] = [];
  const clusterOf = new Int32Array(examples.length);
  examples.forEach((e, i) => {
    if (e.doc === undefined) throw new OptionError('examples', `examples[${i}].doc is needed by the 'documents' bound`);
    let c = index.get(e.doc);
    if (c === undefined) {
      c = sizes.length;
      index.set(e.doc, c);
      sizes.push(0);
    }
    sizes[c]++;
    clusterOf[i] = c;
  });
  if (sizes.length < 2) throw new OptionError('examples', `the 'documents' bound needs examples of at least 2 documents, got ${sizes.length}`);
  return { clusterOf, sizes, nn: sizes.reduce((a, s) => a + s * s, 0) };
}

/** The documents' bound (bounds.ts, clusteredLowerBound) on the agreement of one exit outcome per example. */
export function documentsLowerBound(examples: CalibrationExample[], agrees: ArrayLike<boolean>, confidence: number): number {
  const clusters = documentClusters(examples);
  const x = new Array<number>(clusters.sizes.length).fill(0);
  let total = 0;
  for (let i = 0; i < examples.length; i++) if (agrees[i]) (x[clusters.clusterOf[i]]++, total++);
  let xx = 0;
  let xn = 0;
  x.forEach((v, c) => ((xx += v * v), (xn += v * clusters.sizes[c])));
  return clusteredLowerFromSums({ x: total, n: examples.length, xx, xn, nn: clusters.nn, k: clusters.sizes.length }, confidence);
}

/** Exit rule with a threshold per layer: stop at the first check whose score >= thresholds[check.layer]. */
export function simulateLayerExit(examples: CalibrationExample[], thresholds: ArrayLike<number>): { agreement: number; meanLayers: number } {
  checkExamples(examples);
  const { agreeCount, totalLayers } = countLayerExit(examples, thresholds);
  return { agreement: agreeCount / examples.length, meanLayers: totalLayers / examples.length };
}

function countLayerExit(examples: CalibrationExample[], thresholds: ArrayLike<number>): { agreeCount: number; totalLayers: number } {
  let agreeCount = 0;
  let totalLayers = 0;
  for (const example of examples) {
    let layersUsed = example.nLayer;
    let agrees = true;
    for (const check of example.checks) {
      if (check.score >= thresholds[check.layer]) {
        layersUsed = check.layer + 1;
        agrees = check.agrees;
        break;
      }
    }
    totalLayers += layersUsed;
    if (agrees) agreeCount++;
  }
  return { agreeCount, totalLayers };
}

/** Candidate values per layer of calibrateLayerThresholds: this many quantiles of the layer's scores, and +Infinity. */
export const LAYER_THRESHOLD_CANDIDATES = 64;

/**
 * Per-layer thresholds chosen jointly (coordinate ascent) to minimise the mean layers used — maximise pruning —
 * subject to the same constraint as calibrateThreshold (agreement, or its Clopper–Pearson lower bound at
 * `confidence`, >= target). Starts from the single calibrated threshold (feasible by construction), then sweeps
 * the layers in order, moving one layer's threshold at a time to the candidate that lowers the cost most while
 * the constraint holds (ties: the larger threshold, the more conservative), until a sweep changes nothing (at most
 * 20 sweeps). Candidates of a layer are LAYER_THRESHOLD_CANDIDATES quantiles of the scores seen at it, and
 * +Infinity (never stop there). A local optimum, not a global one; each step only lowers the cost, so it prunes at
 * least as much as the single threshold on these examples. Layers without checks get +Infinity. More freedom
 * than one threshold: more room to fit the calibration examples' luck, which the held-out evaluation measures.
 */
export function calibrateLayerThresholds(
  examples: CalibrationExample[],
  target: number,
  confidence?: number,
): { thresholds: number[]; agreement: number; meanLayers: number } {
  const single = calibrateThreshold(examples, target, confidence);
  const n = examples.length;
  const nLayer = Math.max(...examples.map((e) => e.nLayer));
  const needed = confidence === undefined ? Math.ceil(target * n - 1e-9) : agreeingNeeded(n, target, confidence);
  const scoresAt: number[][] = Array.from({ length: nLayer }, () => []);
  for (const e of examples) for (const c of e.checks) scoresAt[c.layer].push(c.score);
  const candidates = scoresAt.map((scores) => {
    if (scores.length === 0) return [Infinity];
    const sorted = Float64Array.from(scores).sort();
    const values = new Set<number>([Infinity, single.threshold]);
    for (let q = 0; q < LAYER_THRESHOLD_CANDIDATES; q++) values.add(sorted[Math.min(sorted.length - 1, Math.floor(((q + 0.5) * sorted.length) / LAYER_THRESHOLD_CANDIDATES))]);
    return [...values].sort((a, b) => b - a);
  });
  const thresholds = scoresAt.map((scores) => (scores.length === 0 ? Infinity : single.threshold));
  let { agreeCount, totalLayers } = countLayerExit(examples, thresholds);
  for (let sweep = 0; sweep < 20; sweep++) {
    let changed = false;
    for (let layer = 0; layer < nLayer; layer++) {
      if (scoresAt[layer].length === 0) continue;
      const kept = thresholds[layer];
      let best = { value: kept, agreeCount, totalLayers };
      for (const value of candidates[layer]) {
        if (value === kept) continue;
        thresholds[layer] = value;
        const r = countLayerExit(examples, thresholds);
        // Candidates arrive in decreasing order: strict < keeps the largest threshold of a cost tie.
        if (r.agreeCount >= needed && r.totalLayers < best.totalLayers) best = { value, ...r };
      }
      thresholds[layer] = best.value;
      if (best.value !== kept) {
        changed = true;
        agreeCount = best.agreeCount;
        totalLayers = best.totalLayers;
      }
    }
    if (!changed) break;
  }
  return { thresholds, agreement: agreeCount / n, meanLayers: totalLayers / n };
}

/**
 * Agreement/meanLayers for every candidate threshold (for plots: accuracy vs pruning ratio), in decreasing
 * threshold order, starting at +Infinity (never exit; JSON.stringify writes it as null). A candidate is a
 * score at which some example's exit layer changes; between candidates nothing changes. With more candidates
 * than `maxPoints` (an integer >= 2; default: no limit), keeps `maxPoints` of them evenly spaced in rank,
 * always including the first (+Infinity) and the last (lowest threshold).
 */
export function thresholdSweep(examples: CalibrationExample[], maxPoints?: number): ThresholdPoint[] {
  checkExamples(examples);
  if (maxPoints !== undefined && (!Number.isSafeInteger(maxPoints) || maxPoints < 2)) {
    throw new OptionError('maxPoints', `must be an integer >= 2, got ${String(maxPoints)}`);
  }
  const n = examples.length;
  const points: ThresholdPoint[] = [];
  sweepThresholds(examples, (threshold, agreeCount, totalLayers) => {
    points.push({ threshold, agreement: agreeCount / n, meanLayers: totalLayers / n });
  });
  if (maxPoints === undefined || points.length <= maxPoints) return points;
  const kept: ThresholdPoint[] = [];
  for (let k = 0; k < maxPoints; k++) kept.push(points[Math.round((k * (points.length - 1)) / (maxPoints - 1))]);
  return kept;
}

/**
 * Visits +Infinity, then every threshold at which the outcome changes, in decreasing order, with the sum over
 * examples of their outcome's value — by default 1 where the exit agrees (full depth agrees), so the number of
 * agreeing examples — and the total layers used at that threshold. `valueOf(example, check)` gives another
 * value (check undefined: full depth), e.g. the accuracy drop.
 *
 * For one example, the exit at threshold τ is the first check whose running maximum of scores reaches τ.
 * So the exit only moves at "records" — checks whose score exceeds every earlier score of the example —
 * and at τ = a record's score the exit moves to that record (earlier records have lower scores, so they
 * are not reached yet). Sorting all records by score and applying them in decreasing order, a group of
 * equal scores at a time, gives every breakpoint in O(N log N).
 */
function sweepThresholds(
  examples: CalibrationExample[],
  visit: (threshold: number, valueSum: number, totalLayers: number, docs?: { xx: number; xn: number }) => void,
  clusters?: DocumentClusters,
  valueOf: (example: CalibrationExample, check: CalibrationExample['checks'][number] | undefined) => number = (_, check) => (check === undefined || check.agrees ? 1 : 0),
): void {
  // Per example, its current outcome: layers used and its value. Shape [nExamples] each.
  const layersUsed = new Float64Array(examples.length);
  const values = new Float64Array(examples.length);
  let totalLayers = 0;
  let valueSum = 0;
  for (let e = 0; e < examples.length; e++) {
    layersUsed[e] = examples[e].nLayer;
    values[e] = valueOf(examples[e], undefined);
    valueSum += values[e];
    totalLayers += examples[e].nLayer;
  }
  // With clusters: the value summed per document x_g, and Σx_g², Σx_g·n_g kept as examples change outcome.
  const perDoc = clusters ? new Float64Array(clusters.sizes.length) : undefined;
  const docs = clusters ? { xx: 0, xn: 0 } : undefined;
  if (clusters && perDoc && docs) {
    for (let e = 0; e < examples.length; e++) perDoc[clusters.clusterOf[e]] += values[e];
    perDoc.forEach((x, c) => ((docs.xx += x * x), (docs.xn += x * clusters.sizes[c])));
  }
  visit(Infinity, valueSum, totalLayers, docs);

  // Records, shape [nRecords] each: score, example index, check index.
  const recordScore: number[] = [];
  const recordExample: number[] = [];
  const recordCheck: number[] = [];
  examples.forEach((example, e) => {
    let runningMax = -Infinity;
    example.checks.forEach((check, c) => {
      if (check.score > runningMax) {
        runningMax = check.score;
        recordScore.push(check.score);
        recordExample.push(e);
        recordCheck.push(c);
      }
    });
  });
  const order = Array.from(recordScore.keys()).sort((a, b) => recordScore[b] - recordScore[a]);

  for (let k = 0; k < order.length; ) {
    const threshold = recordScore[order[k]];
    // An example has at most one record per score value (records strictly increase), so a group never
    // moves the same example twice.
    for (; k < order.length && recordScore[order[k]] === threshold; k++) {
      const e = recordExample[order[k]];
      const check = examples[e].checks[recordCheck[order[k]]];
      totalLayers += check.layer + 1 - layersUsed[e];
      const value = valueOf(examples[e], check);
      const change = value - values[e];
      valueSum += change;
      if (change !== 0 && clusters && perDoc && docs) {
        const c = clusters.clusterOf[e];
        docs.xx += 2 * perDoc[c] * change + change * change;
        docs.xn += change * clusters.sizes[c];
        perDoc[c] += change;
      }
      layersUsed[e] = check.layer + 1;
      values[e] = value;
    }
    visit(threshold, valueSum, totalLayers, docs);
  }
}

/** The fewest agreeing examples of n whose lower bound reaches target (n + 1: none does). The bound rises with the count. */
function agreeingNeeded(n: number, target: number, confidence: number): number {
  let lo = 0;
  let hi = n + 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (mid <= n && clopperPearsonLower(mid, n, confidence) >= target) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

function meanFullDepth(examples: CalibrationExample[]): number {
  let total = 0;
  for (const example of examples) total += example.nLayer;
  return total / examples.length;
}

/** Checks the examples' shape: nLayer a positive integer, checks at increasing layers in [0, nLayer), finite
 *  scores, boolean agrees. Non-finite scores are rejected because +Infinity is the "never exit" threshold. */
function checkExamples(examples: CalibrationExample[]): void {
  if (!Array.isArray(examples) || examples.length === 0) {
    throw new OptionError('examples', 'must be a non-empty array of calibration examples');
  }
  // Plain loops, and messages built only on failure: calibrateThreshold may see millions of checks.
  for (let e = 0; e < examples.length; e++) {
    const example = examples[e];
    if (typeof example !== 'object' || example === null) {
      throw new OptionError('examples', `examples[${e}] must be an object`);
    }
    const { nLayer, checks } = example;
    if (!Number.isSafeInteger(nLayer) || nLayer < 1) {
      throw new OptionError('examples', `examples[${e}].nLayer must be a positive integer, got ${String(nLayer)}`);
    }
    if (!Array.isArray(checks)) throw new OptionError('examples', `examples[${e}].checks must be an array`);
    let previousLayer = -1;
    for (let c = 0; c < checks.length; c++) {
      const check = checks[c];
      if (typeof check !== 'object' || check === null) throw new OptionError('examples', `examples[${e}].checks[${c}] must be an object`);
      if (!Number.isSafeInteger(check.layer) || check.layer <= previousLayer || check.layer >= nLayer) {
        throw new OptionError(
          'examples',
          `examples[${e}].checks[${c}].layer must be an integer in (${previousLayer}, ${nLayer}) (checks in increasing layer order), got ${String(check.layer)}`,
        );
      }
      if (typeof check.score !== 'number' || !Number.isFinite(check.score)) {
        throw new OptionError('examples', `examples[${e}].checks[${c}].score must be a finite number, got ${String(check.score)}`);
      }
      if (typeof check.agrees !== 'boolean') {
        throw new OptionError('examples', `examples[${e}].checks[${c}].agrees must be a boolean, got ${String(check.agrees)}`);
      }
      previousLayer = check.layer;
    }
  }
}

/** The score of a check that may never stop: below every finite threshold, yet finite (checkExamples). */
export const NEVER_STOPS = -Number.MAX_VALUE;

/**
 * Scores against a per-layer shape: score − shape[layer], so that one threshold c on them is the per-layer rule
 * "score >= shape[layer] + c" (a shape value of +Infinity: never stop at that layer, NEVER_STOPS). The shape is
 * chosen on other data than the calibration examples (train.ts: the fit data), so only its level c is calibrated.
 */
export function shapedScores(scores: readonly number[], layers: readonly number[], shape: readonly number[]): number[] {
  return scores.map((s, i) => {
    const a = shape[layers[i]];
    return a === Infinity || a === undefined ? NEVER_STOPS : s - a;
  });
}

/**
 * Scores of the two-check rule "stop where the score reached the threshold at this check and at the previous
 * one": min(score_i, score_{i−1}); the first check never stops (NEVER_STOPS). One threshold on these is that
 * rule, so calibrateThreshold calibrates it unchanged.
 */
export function confirmedScores(scores: readonly number[]): number[] {
  return scores.map((s, i) => (i === 0 ? NEVER_STOPS : Math.min(s, scores[i - 1])));
}

/**
 * The paper's criterion with a promise: the cheapest threshold whose next-token accuracy drop against full depth
 * — per example fullCorrect − correct at its exit, in {−1, 0, 1} — has a one-sided upper confidence bound over
 * the examples' documents (bounds.ts clusteredMeanUpper) <= maxDrop (a fraction: 0.01 = 1 point). A point
 * estimate of the drop chosen on calibration data overshoots on held-out data; the bound keeps the choice on the
 * safe side. Every example needs `doc`, `fullCorrect` and, per check, `correct`. +Infinity (never exit: no drop)
 * when no threshold qualifies. Ties in cost: the largest threshold.
 */
export function calibrateThresholdForDrop(
  examples: CalibrationExample[],
  maxDrop: number,
  confidence: number,
): { threshold: number; drop: number; dropUpper: number; meanLayers: number } {
  checkExamples(examples);
  if (typeof maxDrop !== 'number' || !(maxDrop >= 0 && maxDrop <= 1)) throw new OptionError('maxDrop', `must be a number in [0, 1], got ${String(maxDrop)}`);
  examples.forEach((e, i) => {
    if (typeof e.fullCorrect !== 'boolean' || e.checks.some((c) => typeof c.correct !== 'boolean'))
      throw new OptionError('examples', `examples[${i}] needs fullCorrect and, at every check, correct (the gold token)`);
  });
  const clusters = documentClusters(examples);
  const n = examples.length;
  const k = clusters.sizes.length;
  const t = studentTQuantile(confidence, k - 1);
  let best = { threshold: Infinity, drop: 0, dropUpper: 0, meanLayers: meanFullDepth(examples) };
  let bestTotalLayers = Infinity;
  sweepThresholds(
    examples,
    (threshold, dropSum, totalLayers, docs) => {
      if (totalLayers >= bestTotalLayers) return;
      const mean = dropSum / n;
      // Between-document variance of the ratio mean (bounds.ts clusteredMeanUpper, from the running sums).
      const squares = Math.max(0, docs!.xx - 2 * mean * docs!.xn + mean * mean * clusters.nn);
      const upper = mean + t * Math.sqrt(((k / (k - 1)) * squares) / (n * n));
      if (upper <= maxDrop) {
        bestTotalLayers = totalLayers;
        best = { threshold, drop: mean, dropUpper: upper, meanLayers: totalLayers / n };
      }
    },
    clusters,
    (e, check) => (e.fullCorrect ? 1 : 0) - (check === undefined ? (e.fullCorrect ? 1 : 0) : check.correct ? 1 : 0),
  );
  return best;
}
