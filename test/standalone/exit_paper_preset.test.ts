/**
 * --preset paper (issue 14): faithful lens, p1 + gap, linear SVM, and the SVM's own sign as the decision — the
 * exit decisions must be exactly libsvm's own predict on the same vectors, for either order of libsvm's labels,
 * also after the exit file's round trip.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Trace } from '../../lib/exit/collect';
import { EXIT_FILE_FORMAT, loadExitFile, policyFromExitFile, saveExitFile } from '../../lib/exit/exit_file';
import { LensReading } from '../../lib/exit/lens';
import { classifierPolicy } from '../../lib/exit/policy';
import { PAPER_PRESET, trainPolicy } from '../../lib/exit/train';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const LibSVM = require('libsvm-js/asm');

/** A seeded LCG in [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

/** Traces of 6 layers whose lens gets surer with depth; the top-1 agrees with `final` more often when p1 is high. */
function traces(n: number, seed: number, firstAgrees: boolean): Trace[] {
  const r = rng(seed);
  return Array.from({ length: n }, (_, e) => {
    const checks = Array.from({ length: 5 }, (_, layer) => {
      const p1 = Math.min(0.99, 0.1 + 0.15 * layer + 0.3 * r());
      const p2 = (1 - p1) * r();
      const agrees = e === 0 && layer === 0 ? firstAgrees : r() < p1;
      return { layer, top1: agrees ? 7 : 3, p1, p2, gap: p1 - p2, entropy: 1 - p1 };
    });
    return { nLayer: 6, final: 7, doc: e, checks };
  });
}

describe('--preset paper', () => {
  test.each([true, false])('decides as libsvm predicts (first training example agrees: %s)', (firstAgrees) => {
    const fit = traces(300, 11, firstAgrees);
    const calibration = traces(200, 12, true);
    const t = trainPolicy(fit, { minLayer: 1, checkEvery: 1 }, PAPER_PRESET.lens, {
      classifier: PAPER_PRESET.classifier,
      features: PAPER_PRESET.features,
      decision: PAPER_PRESET.decision,
      label: 'final',
      target: 0.99,
      seed: 1,
      calibrationTraces: calibration,
    });
    expect(t.kind).toBe('svm');
    expect(t.features).toEqual(['p1', 'gap']);
    expect(t.threshold).toBe(firstAgrees ? Number.MIN_VALUE : 0);

    // libsvm itself, trained on the same standardized rows with the same balanced weights.
    const X = fit.flatMap((tr) => tr.checks.map((c) => [c.p1, c.gap]));
    const y = fit.flatMap((tr) => tr.checks.map((c) => (c.top1 === tr.final ? 1 : 0)));
    const json = t.classifier!.toJSON() as { mean: number[]; std: number[] };
    const standardize = (x: number[]) => x.map((v, j) => (v - json.mean[j]) / json.std[j]);
    const ones = y.filter((v) => v === 1).length;
    const svm = new LibSVM({
      type: LibSVM.SVM_TYPES.C_SVC,
      kernel: LibSVM.KERNEL_TYPES.LINEAR,
      cost: 1,
      weight: { 0: y.length / (2 * (y.length - ones)), 1: y.length / (2 * ones) },
      quiet: true,
    });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'adainfer-paper-'));
    const file = path.join(dir, 'paper.json');
    saveExitFile(file, {
      format: EXIT_FILE_FORMAT,
      model: { fingerprint: 'f', name: 'synthetic', nLayer: 6 },
      policy: { kind: 'svm', schedule: t.schedule, lens: t.lens, threshold: t.threshold, classifier: t.classifier!.toJSON(), features: t.features },
      training: { label: 'final', data: 'synthetic', examples: 300, window: 1, target: 0.99, preset: 'paper', seed: 1, createdAt: 'test' },
      metrics: {},
    });
    try {
      svm.train(X.map(standardize), y);
      const policies = [classifierPolicy(t.classifier!, t.threshold), policyFromExitFile(loadExitFile(file))];
      const r = rng(99);
      // Probes: the training rows and random points.
      const probe = [...X, ...Array.from({ length: 3000 }, () => [r(), r() * r()])];
      const theirs = probe.map((x) => svm.predictOne(standardize(x)));
      expect(new Set(theirs).size).toBe(2); // both decisions occur: the comparison can fail
      for (const policy of policies) {
        const ours = probe.map(([p1, gap]) => {
          const reading: LensReading = { top1: 0, p1, p2: p1 - gap, gap, entropy: 0 };
          return policy.shouldExit(0, reading, 6) ? 1 : 0;
        });
        expect(ours).toEqual(theirs);
      }
    } finally {
      svm.free();
    }
  });

  test('the sign decision needs an SVM', () => {
    expect(() =>
      trainPolicy(traces(50, 1, true), { minLayer: 1, checkEvery: 1 }, { mode: 'faithful' }, { classifier: 'crf', label: 'final', target: 0.9, seed: 1, decision: 'sign' }),
    ).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
  });
});
