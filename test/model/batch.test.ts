/**
 * Batched execution with trained exit policies (SVM and CRF, faithful and fast lens, trained on
 * ../shared/datasets/tinystories): every sequence of a batch exits at the same layers and produces the same
 * tokens as it does alone, and the same classification.
 */
import * as path from 'path';
import { BatchExit, BatchKvFill, classifyBatch, generateBatch, runBatchToEnd } from '../../lib/engine/batch';
import { ResolvedSampling } from '../../lib/engine/sampling';
import { Sequence } from '../../lib/engine/sequence';
import { collectTraces } from '../../lib/exit/collect';
import { loadExamples } from '../../lib/exit/data';
import { EXIT_FILE_FORMAT, ExitFile, policyFromExitFile } from '../../lib/exit/exit_file';
import { LensOptions } from '../../lib/exit/lens';
import { ExitDecider } from '../../lib/exit/decider';
import { ExitPolicy } from '../../lib/exit/policy';
import { trainPolicy } from '../../lib/exit/train';
import { TransformerModel } from '../../lib/model/transformer';
import { BUNDLED_MODEL, describeShared } from '../helpers';

describeShared('batched execution with trained exit policies', (shared) => {
  const data = path.join(shared, 'datasets', 'tinystories', 'train.txt');
  const model = TransformerModel.load(BUNDLED_MODEL);
  const nLayer = model.config.nLayer;
  afterAll(() => model.dispose());

  function train(classifier: 'svm' | 'crf', lens: LensOptions): ExitFile {
    const examples = loadExamples(data, model.tokenizer, { window: 32, limit: 200, seed: 3 });
    const ctx = model.createContext({ contextSize: 32, batchSize: 32, threads: 1, lensK: 16 });
    const schedule = { minLayer: 1, checkEvery: 1 };
    const traces = collectTraces(ctx, examples, schedule, lens);
    ctx.dispose();
    const t = trainPolicy(traces, schedule, lens, { classifier, label: 'final', target: 0.9, seed: 3 });
    return {
      format: EXIT_FILE_FORMAT,
      model: { fingerprint: model.fingerprint, name: model.config.name, nLayer },
      policy: { kind: t.kind, schedule, lens: t.lens, threshold: t.threshold, feature: t.feature, classifier: t.classifier?.toJSON(), features: t.features },
      training: { label: 'final', data, examples: examples.length, window: 32, target: 0.9, seed: 3, createdAt: 'test' },
      metrics: t.metrics,
    };
  }

  // Prompts from the data set itself (the first words of stories), as a batch job would see them.
  const prompts = loadExamples(data, model.tokenizer, { window: 12, limit: 10, seed: 17 }).map((e) => e.tokens);
  const sampling: ResolvedSampling = { temperature: 0.8, topK: 40, topP: 0.95, seed: 21 };

  test.each([
    ['svm', { mode: 'faithful' }],
    ['crf', { mode: 'faithful' }],
    ['svm', { mode: 'fast' }],
    ['crf', { mode: 'fast' }],
  ] as const)('%s, %o lens: same exit layers and tokens as one by one; same classification', (kind, lens) => {
    const file = train(kind, lens as LensOptions);
    const policy = (): ExitPolicy => policyFromExitFile(file);
    const kvFill: BatchKvFill = 'propagate';
    const single = prompts.map((p, i) => {
      const ctx = model.createContext({ contextSize: 64, batchSize: 64, threads: 1, lensK: 16 });
      const run = new Sequence(ctx, kvFill).generate(p, { maxTokens: 24, sampling: { ...sampling, seed: sampling.seed + i }, exit: new ExitDecider(ctx, policy()) });
      let r = run.next();
      while (!r.done) r = run.next();
      ctx.dispose();
      return r.value;
    });
    const layers = single.flatMap((r) => r.exitLayers);
    expect(layers.some((l) => l < nLayer)).toBe(true);
    const exit: BatchExit = policy;
    for (const compaction of [true, false]) {
      const ctx = model.createContext({ contextSize: 64, batchSize: 64, threads: 1, lensK: 16, sequences: 4 + (compaction ? 0 : 1) });
      const run = runBatchToEnd(generateBatch(ctx, prompts.map((tokens) => ({ tokens })), { maxTokens: 24, sampling, exit, kvFill, compaction }));
      ctx.dispose();
      expect(run.results.map((r) => r.exitLayers)).toEqual(single.map((r) => r.exitLayers));
      expect(run.results.map((r) => r.tokens)).toEqual(single.map((r) => r.tokens));
    }

    const labels = [' the', ' a', ' and'].map((w) => model.tokenizer.encode(w, { addSpecial: false })[0]);
    const one = prompts.map((p) => {
      const ctx = model.createContext({ contextSize: 64, batchSize: 64, threads: 1, lensK: 16 });
      const p0 = policy();
      const lensed = p0.lens.mode === 'fast' ? { ...p0, lens: { mode: 'fast' as const, candidates: labels } } : p0;
      const r = new Sequence(ctx).classify(p, labels, new ExitDecider(ctx, lensed));
      ctx.dispose();
      return r;
    });
    const ctx = model.createContext({ contextSize: 64, batchSize: 64, threads: 1, lensK: 16, sequences: 3 });
    const c = runBatchToEnd(classifyBatch(ctx, prompts.map((tokens) => ({ tokens, labelTokens: labels })), { exit }));
    ctx.dispose();
    expect(c.results.map((r) => [r.label, r.exitLayer, r.probs])).toEqual(one.map((r) => [r.index, r.layers, r.probs]));
  });
});
