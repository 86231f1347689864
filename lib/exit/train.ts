/**
 * Training an exit policy from traces (lib/exit/collect.ts), as in the paper: every checked layer is an
 * example labelled by whether its top-1 token is already the answer — the full-depth answer (`final`,
 * default: needs no gold labels) or the gold token (`gold`). A classifier is fitted on one part of the traces
 * and its decision threshold calibrated on the other — split by document, so that no document (no overlapping
 * window of one story) is on both sides — or on traces of separate calibration data.
 *
 * What `target` promises: the threshold is the cheapest one at which the 95% one-sided lower confidence bound of
 * the agreement with full depth, counted over the calibration examples, is >= target. So on new documents from the
 * same distribution as the calibration documents, agreement is >= target with about 95% confidence. The bound
 * counts the calibration DOCUMENTS as the independent units (default, bound 'documents': bounds.ts
 * clusteredLowerBound, Clopper–Pearson at Korn–Graubard's effective sample size), because the positions of one
 * story are correlated — they agree or fail together — and a bound that counts every position as an independent
 * trial (bound 'positions', the plain Clopper–Pearson bound) is too narrow by the design effect. "About": the
 * threshold is chosen on the same examples it is checked on (one value: a small selection effect; per-layer
 * thresholds choose 9 and fit the calibration set's luck, hence 'shaped', whose shape comes from the fit part and
 * only its level from the calibration part); examples of another distribution get no promise. Too few calibration
 * examples for the bound to reach target (at full agreement the bound is 0.05^(1/n): n >= 299 for 0.99) give the
 * threshold +Infinity: never exit. More calibration examples let the bound sit closer to the measured agreement:
 * calibrate on every position available.
 */
import { AdaInferError, OptionError } from '../errors';
import { BoundUnit, calibrateLayerThresholds, calibrateThreshold, calibrateThresholdForDrop, CalibrationExample, documentsLowerBound, shapedScores, simulateExit, simulateLayerExit } from './calibrate';
import { ExitClassifier, FeatureName } from './classifier';
import { Trace } from './collect';
import { trainCrf } from './crf';
import { clopperPearsonLower, DEFAULT_CONFIDENCE } from './bounds';
import { splitByDocument } from './data';
import { FeatureExtractor, LensOptions } from './lens';
import { ExitProbe, ProbeForm, trainHiddenStateProbe, withProbe } from './probe';
import { ExitSchedule } from './policy';
import { trainSvm } from './svm';

export type ClassifierKind = 'svm' | 'svm-rbf' | 'crf' | 'threshold';
export type LabelKind = 'final' | 'gold';

/** The paper's two features, plus the ones that are free in the same pass. */
export const DEFAULT_FEATURES: FeatureName[] = ['p1', 'gap', 'entropy', 'layer'];

/** The 'probe' feature's form unless told: measured in bench/exit_probe.ts (docs/exit_evidence.md). */
export const DEFAULT_PROBE_FORM: ProbeForm = 'mlp';

export interface TrainOptions {
  classifier: ClassifierKind;
  label: LabelKind;
  target: number;
  seed: number;
  /** threshold classifier: the feature compared with the threshold. */
  feature?: 'p1' | 'gap';
  features?: FeatureName[];
  /** With the 'probe' feature: the probe's form (probe.ts; default DEFAULT_PROBE_FORM). */
  probe?: ProbeForm;
  /** Share of the documents whose traces fit (the rest calibrate); ignored with `calibrationTraces`. */
  fitFraction?: number;
  /** Calibrate on these traces (of other documents) and fit on all of `traces`. */
  calibrationTraces?: Trace[];
  /** Confidence of the lower bound that must reach `target` (default 0.95). */
  confidence?: number;
  /**
   * 'calibrated' (default): the threshold calibrated to `target`. 'sign': an SVM's own stop/continue sign, as
   * libsvm predicts (the paper's decision, --preset paper); the calibration part is then only measured.
   */
  decision?: 'calibrated' | 'sign';
  /**
   * 'single' (default): one threshold for every layer. 'per-layer': one per layer, chosen jointly on the
   * calibration part (calibrate.ts calibrateLayerThresholds: coordinate ascent under the same constraint) — 9
   * free values fitted to the calibration examples, which the bound does not account for. 'shaped': one per layer,
   * whose shape (the thresholds' differences between layers) is chosen on the fit part and whose level alone is
   * calibrated, so the bound is that of a rule with one calibrated value.
   */
  thresholds?: 'single' | 'per-layer' | 'shaped';
  /**
   * What the lower bound counts as independent (calibrate.ts BoundUnit): 'documents' (default; 'positions' when
   * the calibration examples come from one document) — the calibration examples' documents, since the positions
   * of one story agree or fail together; 'positions' — every example.
   */
  bound?: BoundUnit;
  /**
   * The paper's criterion instead of `target`: the cheapest single threshold whose next-token accuracy drop against
   * full depth (a fraction: 0.01 = 1 point) has a 95% upper bound over the calibration documents <= maxDrop
   * (calibrate.ts calibrateThresholdForDrop). Needs gold tokens on the calibration examples.
   */
  maxDrop?: number;
}

/** `--preset paper`: the paper's method as published — faithful lens, p1 and gap, linear SVM, its own sign. */
export const PAPER_PRESET = { classifier: 'svm' as const, features: ['p1', 'gap'] as FeatureName[], decision: 'sign' as const, lens: { mode: 'faithful' as const } };

export interface TrainedPolicy {
  kind: ClassifierKind;
  threshold: number;
  /** thresholds 'per-layer': one per layer (index = 0-based layer), replacing `threshold` in the policy. */
  layerThresholds?: number[];
  feature?: 'p1' | 'gap';
  classifier?: ExitClassifier;
  features?: FeatureName[];
  schedule: ExitSchedule;
  lens: LensOptions;
  metrics: {
    fitExamples: number;
    calibrationExamples: number;
    positiveRate: number;
    /** agreementLower: over positions; agreementLowerDocuments: over the calibration documents (undefined with one). */
    calibration: {
      agreement: number;
      agreementLower: number;
      agreementLowerDocuments?: number;
      bound: BoundUnit;
      meanLayers: number;
      pruningRatio: number;
      /** maxDrop: the calibration examples' accuracy drop at the threshold, and its 95% upper bound over documents. */
      accuracyDrop?: number;
      accuracyDropUpper?: number;
    };
    fitDocuments: number;
    calibrationDocuments: number;
  };
}

/** Scores of every check of a trace, in order (the classifier's state runs across the layers). */
export function scoreTrace(t: Trace, score: (x: Float64Array) => number, begin: () => void, features: FeatureName[], probe?: ExitProbe): number[] {
  begin();
  const x = new FeatureExtractor(features, probe);
  x.begin();
  return t.checks.map((c) => score(x.next(c, c.layer, t.nLayer)));
}

export function trainPolicy(traces: Trace[], schedule: ExitSchedule, lens: LensOptions, o: TrainOptions): TrainedPolicy {
  if (!(o.target > 0 && o.target <= 1)) throw new OptionError('target', `must be in (0, 1], got ${String(o.target)}`);
  const target = (t: Trace) => (o.label === 'gold' ? t.gold : t.final);
  const usable = traces.filter((t) => target(t) !== undefined && t.checks.length > 0);
  if (usable.length < 4) throw new AdaInferError('DATA_FILE', `only ${usable.length} usable examples (with ${o.label} labels and checks); need at least 4`);
  const [fit, calib] = o.calibrationTraces
    ? [usable, o.calibrationTraces.filter((t) => t.checks.length > 0)]
    : splitByDocument(usable, o.fitFraction ?? 0.8, o.seed);
  if (fit.length === 0 || calib.length === 0) throw new AdaInferError('DATA_FILE', `no ${fit.length === 0 ? 'fit' : 'calibration'} examples with checks`);
  const features = o.features ?? DEFAULT_FEATURES;

  let classifier: ExitClassifier | undefined;
  let probe: ExitProbe | undefined;
  let score: (x: Float64Array) => number;
  let scoreFeatures: FeatureName[];
  let positives = 0;
  let total = 0;
  for (const t of fit) for (const c of t.checks) (total++, c.top1 === target(t) && positives++);

  if (o.classifier === 'threshold') {
    if (o.features?.includes('probe')) throw new OptionError('features', "'probe' is a classifier feature: use --classifier svm (--features probe alone thresholds the probe's own score)");
    const feature = o.feature ?? 'gap';
    scoreFeatures = [feature];
    score = (x) => x[0];
  } else {
    const X: number[][] = [];
    const y: (0 | 1)[] = [];
    const sequences: { x: number[][]; y: (0 | 1)[] }[] = [];
    // The hidden-state probe is fitted on the fit part, with the classifier's label, before the classifier that reads it.
    if (features.includes('probe')) probe = trainHiddenStateProbe(fit, target, o.seed, o.probe ?? DEFAULT_PROBE_FORM);
    const extractor = new FeatureExtractor(features, probe);
    for (const t of fit) {
      const seq = { x: [] as number[][], y: [] as (0 | 1)[] };
      extractor.begin();
      for (const c of t.checks) {
        const row = Array.from(extractor.next(c, c.layer, t.nLayer));
        const label = c.top1 === target(t) ? 1 : 0;
        X.push(row);
        y.push(label);
        seq.x.push(row);
        seq.y.push(label);
      }
      sequences.push(seq);
    }
    classifier =
      o.classifier === 'crf'
        ? trainCrf(sequences, { features, seed: o.seed })
        : trainSvm(X, y, { kernel: o.classifier === 'svm-rbf' ? 'rbf' : 'linear', classWeight: 'balanced', features, seed: o.seed });
    if (probe) classifier = withProbe(classifier, probe);
    const c = classifier;
    scoreFeatures = features;
    score = (x) => c.score(x);
  }

  // Calibrate on the held-out part: agreement with full depth, whatever the training label was.
  const toExamples = (traces: Trace[]): CalibrationExample[] =>
    traces.map((t) => {
      const scores = scoreTrace(t, score, () => classifier?.begin(), scoreFeatures, probe);
      return { nLayer: t.nLayer, doc: t.doc, checks: t.checks.map((c, i) => ({ layer: c.layer, score: scores[i], agrees: c.top1 === t.final })) };
    });
  const examples = toExamples(calib);
  const confidence = o.confidence ?? DEFAULT_CONFIDENCE;
  // per-layer thresholds search 9 values under the bound over positions (their default); the others default to
  // documents, except calibration examples of one document, where there is no between-document variance to
  // measure: then positions (metrics.calibration.bound records which).
  const calibrationDocuments = new Set(calib.map((t) => t.doc)).size;
  const unit: BoundUnit = o.bound ?? (o.thresholds === 'per-layer' || calibrationDocuments < 2 ? 'positions' : 'documents');
  if (unit === 'documents' && calibrationDocuments < 2)
    throw new AdaInferError('DATA_FILE', "the calibration examples come from one document: the bound over documents needs at least 2 (or bound 'positions')");
  let cal: { threshold: number; agreement: number; meanLayers: number; layerThresholds?: number[] };
  let drop: { drop: number; dropUpper: number } | undefined;
  if (o.maxDrop !== undefined) {
    if (o.decision === 'sign' || (o.thresholds !== undefined && o.thresholds !== 'single'))
      throw new OptionError('maxDrop', 'calibrates one threshold: not with the SVM\'s own sign or per-layer thresholds');
    if (calib.some((t) => t.gold === undefined)) throw new AdaInferError('DATA_FILE', 'the accuracy criterion (maxDrop) needs a gold token on every calibration example');
    const gold = examples.map((e, i) => {
      const t = calib[i];
      return { ...e, fullCorrect: t.final === t.gold, checks: e.checks.map((c, j) => ({ ...c, correct: t.checks[j].top1 === t.gold })) };
    });
    const r = calibrateThresholdForDrop(gold, o.maxDrop, confidence);
    const sim = simulateExit(examples, r.threshold);
    cal = { threshold: r.threshold, agreement: sim.agreement, meanLayers: sim.meanLayers };
    drop = { drop: r.drop, dropUpper: r.dropUpper };
  } else if (o.decision === 'sign') {
    if (o.thresholds === 'per-layer') throw new OptionError('thresholds', "'per-layer' thresholds are calibrated: not with the SVM's own sign");
    if (classifier?.signThreshold === undefined) throw new OptionError('decision', `'sign' needs an SVM classifier, got ${o.classifier}`);
    const sim = simulateExit(examples, classifier.signThreshold);
    cal = { threshold: classifier.signThreshold, agreement: sim.agreement, meanLayers: sim.meanLayers };
  } else if (o.thresholds === 'per-layer') {
    if (unit !== 'positions') throw new OptionError('bound', "'per-layer' thresholds are searched against the bound over positions only (use 'shaped')");
    const single = calibrateThreshold(examples, o.target, confidence);
    const joint = calibrateLayerThresholds(examples, o.target, confidence);
    cal = { threshold: single.threshold, agreement: joint.agreement, meanLayers: joint.meanLayers, layerThresholds: joint.thresholds };
  } else if (o.thresholds === 'shaped') {
    // The shape: per-layer thresholds meeting the target (point estimate) on the fit part; then one level on the
    // calibration part, against the bound. The thresholds are shape + level (+Infinity stays: never stop there).
    const shape = calibrateLayerThresholds(toExamples(fit), o.target).thresholds;
    const shaped = examples.map((e) => ({ ...e, checks: e.checks.map((c) => ({ ...c, score: shapedScores([c.score], [c.layer], shape)[0] })) }));
    const level = calibrateThreshold(shaped, o.target, confidence, unit).threshold;
    const layerThresholds = shape.map((a) => (a === Infinity || level === Infinity ? Infinity : a + level));
    const sim = simulateLayerExit(examples, layerThresholds);
    cal = { threshold: level === Infinity ? Infinity : Math.min(...layerThresholds), agreement: sim.agreement, meanLayers: sim.meanLayers, layerThresholds };
  } else cal = calibrateThreshold(examples, o.target, confidence, unit);
  const agreeing = Math.round(cal.agreement * examples.length);
  const nLayer = traces[0].nLayer;
  return {
    kind: o.classifier,
    threshold: cal.threshold,
    layerThresholds: cal.layerThresholds,
    feature: o.classifier === 'threshold' ? (scoreFeatures[0] as 'p1' | 'gap') : undefined,
    classifier,
    features: classifier ? features : undefined,
    schedule,
    lens,
    metrics: {
      fitExamples: fit.length,
      calibrationExamples: calib.length,
      positiveRate: total > 0 ? positives / total : 0,
      calibration: {
        agreement: cal.agreement,
        agreementLower: clopperPearsonLower(agreeing, examples.length, confidence),
        agreementLowerDocuments: documentsBound(examples, cal, confidence),
        bound: unit,
        ...(drop && { accuracyDrop: drop.drop, accuracyDropUpper: drop.dropUpper }),
        meanLayers: cal.meanLayers,
        pruningRatio: (nLayer - cal.meanLayers) / nLayer,
      },
      fitDocuments: new Set(fit.map((t) => t.doc)).size,
      calibrationDocuments: new Set(calib.map((t) => t.doc)).size,
    },
  };
}

/** The calibrated rule's agreement bound over the calibration documents (undefined with fewer than 2 documents). */
function documentsBound(examples: CalibrationExample[], cal: { threshold: number; layerThresholds?: number[] }, confidence: number): number | undefined {
  if (new Set(examples.map((e) => e.doc)).size < 2) return undefined;
  const at = (layer: number) => (cal.layerThresholds ? cal.layerThresholds[layer] : cal.threshold);
  const agrees = examples.map((e) => {
    const stop = e.checks.find((c) => c.score >= at(c.layer));
    return stop ? stop.agrees : true;
  });
  return documentsLowerBound(examples, agrees, confidence);
}
