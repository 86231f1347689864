/**
 * `eval-tasks` without the command line: for each task, load its data, build the prompts, resolve the label
 * tokens, choose the exit policy (given, or trained on the task's demo part with --train-exit), measure full
 * depth and exit on the evaluated part, sweep the policy's threshold, and gather everything in a Results
 * object (lib/report/schema.ts).
 */
import * as fs from 'fs';
import { AdaInferError, OptionError } from '../errors';
import { ExitClassifier, FeatureName } from '../exit/classifier';
import { loadClassifier } from '../exit/load_classifier';
import { ExitFile, loadExitFile } from '../exit/exit_file';
import { LensOptions } from '../exit/lens';
import { checkSchedule, classifierPolicy, ExitPolicy, ExitSchedule, labelLens, neverPolicy, thresholdPolicy } from '../exit/policy';
import { Trace } from '../exit/collect';
import { ClassifierKind, DEFAULT_FEATURES, LabelKind, trainPolicy } from '../exit/train';
import { BackendChoice, TransformerModel } from '../model/transformer';
import { Tokenizer } from '../tokenizer';
import { LabelInfo, Results, RESULTS_FORMAT, TaskExitInfo, TaskResult } from '../report/schema';
import { collectTaskTraces, measureTask, Scorer, sweep } from './evaluate';
import { buildPrompt, PROMPT_FORMATS, TASK_NAMES, TaskName } from './formats';
import { LabelScheme, noSpaceTokenizer, resolveLabels } from './labels';
import { demoPicker, prepareExamples, PreparedSet } from './prepare';
import { loadTaskData, SPLIT_SEED } from './tasks';

/** --exit: 'never', 'threshold:<p1|gap>:<value>', or the path of an exit file. */
export type ExitChoice = { kind: 'never' } | { kind: 'threshold'; feature: 'p1' | 'gap'; value: number } | { kind: 'file'; path: string };

export function parseExitSpec(spec: string): ExitChoice {
  if (spec === 'never') return { kind: 'never' };
  const m = /^threshold:(p1|gap):(.+)$/.exec(spec);
  if (m) {
    const value = Number(m[2]);
    if (m[2].trim() === '' || !Number.isFinite(value)) throw new OptionError('--exit', `threshold value must be a number, got '${m[2]}'`);
    return { kind: 'threshold', feature: m[1] as 'p1' | 'gap', value };
  }
  if (spec.startsWith('threshold')) throw new OptionError('--exit', `expected threshold:<p1|gap>:<value>, got '${spec}'`);
  if (!fs.existsSync(spec)) throw new OptionError('--exit', `'${spec}' is neither a policy (never, threshold:<p1|gap>:<value>) nor an existing exit file`);
  return { kind: 'file', path: spec };
}

export interface TrainExitOptions {
  classifier: ClassifierKind;
  target: number;
  label: LabelKind;
  /** threshold classifier: the feature compared. */
  feature: 'p1' | 'gap';
  /** Training examples drawn from the demo part. */
  limit: number;
  /** Classifier features (default: train.ts DEFAULT_FEATURES). */
  features?: FeatureName[];
}

export interface EvalTasksOptions {
  modelPath: string;
  tasks: TaskName[];
  shots: number;
  limit?: number;
  seed: number;
  exit: ExitChoice;
  /** Train the exit classifier on each task's demo part (overrides `exit`). */
  train?: TrainExitOptions;
  mode: 'fast' | 'faithful';
  schedule: ExitSchedule;
  dataDir: string;
  threads: number;
  /** Where the blocks run (default 'cpu'; the CLI's --backend defaults to 'auto'). */
  backend?: BackendChoice;
  /** CUDA device index (default 0). */
  device?: number;
  /** Collect traces on the evaluated examples for the threshold sweep (default true). */
  sweep?: boolean;
  /** A progress sink per task (units: training examples + evaluated examples × (1 + sweep)). */
  progress?: (task: TaskName, total: number) => { update(done: number): void; stop(): void };
  log?: (line: string) => void;
}

interface TaskPolicy {
  policy: ExitPolicy;
  /** Scores checks for the sweep, as the policy does. */
  scorer: Scorer;
  /** The policy's threshold on the scorer's score (+Infinity: never stops). */
  threshold: number;
  info: TaskExitInfo;
  note?: string;
}

function featureScorer(feature: 'p1' | 'gap'): Scorer {
  return { features: [feature], score: (x) => x[0], begin: () => undefined };
}

function classifierScorer(c: ExitClassifier): Scorer {
  return { features: c.features, probe: c.probe, score: (x) => c.score(x), begin: () => c.begin() };
}

const finite = (x: number) => (Number.isFinite(x) ? x : null);

/** --train-exit: fit and calibrate on the traces of the task's training examples (lib/exit/train.ts). */
function trainedPolicy(traces: Trace[], o: TrainExitOptions, schedule: ExitSchedule, lens: LensOptions, seed: number): TaskPolicy {
  const oneClass = o.classifier !== 'threshold' ? singleClass(traces, o.label) : undefined;
  if (oneClass !== undefined) {
    // A classifier needs both classes. All "stop": every checked layer already gives the answer, so stopping
    // at the first check is what any classifier would learn; all "continue": never stop.
    const training = { examples: traces.length, fitExamples: 0, calibrationExamples: 0, positiveRate: oneClass, calibrationAgreement: 1, calibrationPruningRatio: 0 };
    const what = `every checked layer of the ${traces.length} training examples is labelled "${oneClass === 1 ? 'stop' : 'continue'}" (one class): no ${o.classifier} can be fitted`;
    return oneClass === 1
      ? {
          policy: thresholdPolicy('p1', 0, schedule, lens),
          scorer: featureScorer('p1'),
          threshold: 0,
          info: { kind: 'threshold', threshold: 0, score: 'p1', training },
          note: `${what}; the policy stops at the first checked layer (p1 ≥ 0)`,
        }
      : {
          policy: neverPolicy(),
          scorer: featureScorer('gap'),
          threshold: Infinity,
          info: { kind: 'never', threshold: null, score: 'gap', training },
          note: `${what}; the policy never stops early`,
        };
  }
  const t = trainPolicy(traces, schedule, lens, { classifier: o.classifier, label: o.label, target: o.target, seed, feature: o.feature, features: o.features });
  const training = {
    examples: traces.length,
    fitExamples: t.metrics.fitExamples,
    calibrationExamples: t.metrics.calibrationExamples,
    positiveRate: t.metrics.positiveRate,
    calibrationAgreement: t.metrics.calibration.agreement,
    calibrationPruningRatio: t.metrics.calibration.pruningRatio,
  };
  if (t.classifier) {
    const c = t.classifier;
    return { policy: classifierPolicy(c, t.threshold, schedule, lens), scorer: classifierScorer(c), threshold: t.threshold, info: { kind: c.kind, threshold: finite(t.threshold), score: `${c.kind} score`, training } };
  }
  const feature = t.feature ?? 'gap';
  return { policy: thresholdPolicy(feature, t.threshold, schedule, lens), scorer: featureScorer(feature), threshold: t.threshold, info: { kind: 'threshold', threshold: finite(t.threshold), score: feature, training } };
}

/** --exit FILE: the file's policy, its lens over the task's label tokens as Session.classify reads it (labelLens). */
function filePolicy(f: ExitFile, labelTokens: number[]): TaskPolicy {
  const p = f.policy;
  const lens = labelLens(p.lens, labelTokens);
  // Per-layer thresholds decide; the sweep (one threshold for every layer) is centred on the single calibrated one.
  const decision = p.layerThresholds ?? p.threshold;
  if (p.kind === 'threshold') {
    const feature = p.feature ?? 'gap';
    return { policy: thresholdPolicy(feature, decision, p.schedule, lens), scorer: featureScorer(feature), threshold: p.threshold, info: { kind: 'threshold', threshold: finite(p.threshold), score: feature, training: null } };
  }
  const c = loadClassifier(p.classifier);
  return { policy: classifierPolicy(c, decision, p.schedule, lens), scorer: classifierScorer(c), threshold: p.threshold, info: { kind: c.kind, threshold: finite(p.threshold), score: `${c.kind} score`, training: null } };
}

/** 1 or 0 when every check of every trace has the same training label (this layer gives the answer), else undefined. */
function singleClass(traces: Trace[], label: LabelKind): 0 | 1 | undefined {
  let pos = 0;
  let total = 0;
  for (const t of traces) {
    const target = label === 'gold' ? t.gold : t.final;
    for (const c of t.checks) (total++, c.top1 === target && pos++);
  }
  return total === 0 ? undefined : pos === total ? 1 : pos === 0 ? 0 : undefined;
}

export function labelInfo(tokenizer: Tokenizer, s: LabelScheme): LabelInfo[] {
  return s.labels.map((l) => ({ word: l.word, token: l.scored, piece: tokenizer.tokenText(l.scored), pieces: l.pieces, multiToken: l.multiToken }));
}

export function runEvalTasks(o: EvalTasksOptions): Results {
  checkSchedule(o.schedule);
  for (const t of o.tasks) if (!TASK_NAMES.includes(t)) throw new OptionError('--tasks', `unknown task '${t}' (known: ${TASK_NAMES.join(', ')})`);
  if (!Number.isInteger(o.shots) || o.shots < 0) throw new OptionError('--shots', `must be an integer >= 0, got ${String(o.shots)}`);
  const log = o.log ?? (() => undefined);
  const model = TransformerModel.load(o.modelPath, { backend: o.backend, device: o.device });
  try {
    const nLayer = model.config.nLayer;
    const identity = { fingerprint: model.fingerprint, name: model.config.name, nLayer };
    const exitFile = !o.train && o.exit.kind === 'file' ? loadExitFile(o.exit.path, identity) : undefined;
    const noSpace = noSpaceTokenizer(model);
    const results: Results = {
      format: RESULTS_FORMAT,
      model: {
        name: model.config.name,
        fingerprint: model.fingerprint,
        layers: nLayer,
        path: o.modelPath,
        vocab: model.config.nVocab,
        contextLength: model.config.contextLength,
        tokenizer: model.tokenizer.model === 'llama' ? 'SentencePiece' : 'byte-level BPE',
      },
      settings: {
        shots: o.shots,
        seed: o.seed,
        exit: o.train ? `train:${o.train.classifier}` : o.exit.kind === 'never' ? 'never' : o.exit.kind === 'threshold' ? `threshold:${o.exit.feature}:${o.exit.value}` : o.exit.path,
        mode: exitFile ? exitFile.policy.lens.mode : o.mode,
        classifier: o.train ? o.train.classifier : exitFile ? exitFile.policy.kind : null,
        target: o.train ? o.train.target : exitFile ? exitFile.training.target : null,
        label: o.train ? o.train.label : exitFile ? exitFile.training.label : null,
        limit: o.limit ?? null,
        trainLimit: o.train ? o.train.limit : null,
        minLayer: exitFile ? exitFile.policy.schedule.minLayer : o.schedule.minLayer,
        checkEvery: exitFile ? exitFile.policy.schedule.checkEvery : o.schedule.checkEvery,
        threads: o.threads,
        dataDir: o.dataDir,
        tasks: [...o.tasks],
        splitSeed: SPLIT_SEED,
        createdAt: new Date().toISOString(),
      },
      tasks: {},
    };

    for (const task of o.tasks) {
      const format = PROMPT_FORMATS[task];
      const data = loadTaskData(task, o.dataDir);
      if (data.eval.length === 0) throw new AdaInferError('DATA_FILE', `${task}: no examples to evaluate`);
      const probe = buildPrompt(format, data.eval[0], []);
      const scheme = resolveLabels(model.tokenizer, noSpace, probe, format.labels, task);
      const labelTokens = scheme.labels.map((l) => l.scored);
      const demos = demoPicker(data.demo, o.shots, o.seed);
      const maxTokens = model.config.contextLength;
      const evalSet = prepareExamples(data.eval, format, model.tokenizer, scheme, demos, { shots: o.shots, limit: o.limit, seed: o.seed, maxTokens });
      if (evalSet.examples.length === 0)
        throw new AdaInferError('DATA_FILE', `${task}: no example fits the model's context of ${maxTokens} tokens (${evalSet.skipped} skipped)`);
      let trainSet: PreparedSet | undefined;
      if (o.train) {
        trainSet = prepareExamples(data.demo, format, model.tokenizer, scheme, demos, { shots: o.shots, limit: o.train.limit, seed: (o.seed + 1) >>> 0, maxTokens });
        if (trainSet.examples.length < 4) throw new AdaInferError('DATA_FILE', `${task}: only ${trainSet.examples.length} training examples fit; need at least 4`);
      }
      const longest = Math.max(...evalSet.examples.map((e) => e.tokens.length), ...(trainSet?.examples.map((e) => e.tokens.length) ?? []));
      const ctx = model.createContext({ contextSize: longest, batchSize: longest, threads: o.threads, lensMaxCandidates: Math.max(labelTokens.length, 16) });
      const doSweep = o.sweep ?? true;
      const total = (trainSet?.examples.length ?? 0) + evalSet.examples.length * (doSweep ? 2 : 1);
      const bar = o.progress?.(task, total);
      let done = 0;
      const step = (base: number) => (d: number) => bar?.update(base + d);
      try {
        // The policy of this task.
        const fastLens: LensOptions = { mode: 'fast', candidates: labelTokens };
        const lens: LensOptions = o.mode === 'fast' ? fastLens : { mode: 'faithful' };
        let tp: TaskPolicy;
        if (o.train && trainSet) {
          const traces = collectTaskTraces(ctx, trainSet.examples, labelTokens, o.schedule, lens, step(done), o.train.features ?? DEFAULT_FEATURES);
          done += trainSet.examples.length;
          tp = trainedPolicy(traces, o.train, o.schedule, lens, o.seed);
        } else if (exitFile) {
          tp = filePolicy(exitFile, labelTokens);
        } else if (o.exit.kind === 'threshold') {
          const { feature, value } = o.exit;
          tp = { policy: thresholdPolicy(feature, value, o.schedule, lens), scorer: featureScorer(feature), threshold: value, info: { kind: 'threshold', threshold: value, score: feature, training: null } };
        } else {
          const score = 'gap (threshold baseline; this run used no exit)';
          tp = { policy: neverPolicy(), scorer: featureScorer('gap'), threshold: Infinity, info: { kind: 'never', threshold: null, score, training: null } };
        }

        const m = measureTask(ctx, evalSet.examples, labelTokens, tp.policy, step(done));
        done += evalSet.examples.length;
        let sweepPoints: TaskResult['sweep'] = null;
        let atThreshold: TaskResult['sweepAtThreshold'] = null;
        if (doSweep) {
          const sweepLens: LensOptions = tp.policy.kind === 'never' ? lens : tp.policy.lens;
          const sweepSchedule = tp.policy.kind === 'never' ? o.schedule : tp.policy.schedule;
          const traces = collectTaskTraces(ctx, evalSet.examples, labelTokens, sweepSchedule, sweepLens, step(done), tp.scorer.features);
          done += evalSet.examples.length;
          const s = sweep(traces, tp.scorer, tp.threshold);
          sweepPoints = s.points;
          atThreshold = s.atThreshold;
        }
        const notes = [...scheme.notes];
        if (tp.note) notes.push(tp.note);
        if (evalSet.shotsReduced > 0)
          notes.push(`${evalSet.shotsReduced} of ${evalSet.examples.length} prompts have fewer than ${o.shots} demonstrations (context of ${maxTokens} tokens, or too few demonstrations in the group)`);
        if (evalSet.skipped > 0) notes.push(`${evalSet.skipped} examples skipped: longer than the context of ${maxTokens} tokens even without demonstrations`);
        if (evalSet.mismatches > 0) notes.push(`${evalSet.mismatches} prompts where the gold label written after the prompt does not start with its scored token`);
        results.tasks[task] = {
          title: format.title,
          ...m,
          chance: 1 / format.labels.length,
          shots: o.shots,
          skipped: evalSet.skipped,
          shotsReduced: evalSet.shotsReduced,
          tokenizationMismatches: evalSet.mismatches,
          labelBoundary: scheme.boundary,
          sharedPrefix: scheme.sharedPrefix.map((id) => model.tokenizer.tokenText(id)),
          labels: labelInfo(model.tokenizer, scheme),
          exit: tp.info,
          sweep: sweepPoints,
          sweepAtThreshold: atThreshold,
          sources: data.sources,
          notes,
        };
        log(`${task}: ${notes.join('; ') || 'labels are single tokens'}`);
      } finally {
        bar?.stop();
        ctx.dispose();
      }
    }
    return results;
  } finally {
    model.dispose();
  }
}
