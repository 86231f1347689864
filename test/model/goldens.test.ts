/**
 * Model outputs against llama.cpp's goldens (../shared/reference, README section 3.5 for the tolerances):
 * logits of every position for every case, and the 64-token greedy continuation through the KV cache.
 * Tolerances (absolute, per logit):
 *   F32: atol = 1e-4 * max(1, max|golden logit|)
 *   F16: atol = 3e-3 and mean |delta| <= 5e-4 (we multiply F16 weights by F32 activations; llama.cpp rounds
 *        activations to F16 first, which accounts for up to ~1.2e-3)
 * Argmax must agree wherever the golden top-1/top-2 gap is >= 2 * atol.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Sequence } from '../../lib/engine/sequence';
import { TransformerContext, TransformerModel } from '../../lib/model/transformer';
import { native } from '../../lib/bindings/native';
import { describeShared, readF32Rows, testBackend } from '../helpers';
import { compareRow, goldenLogitRows, GreedyGolden, LogitsGolden, Tolerance } from './golden_compare';

const F32: Tolerance = { atol: (m) => 1e-4 * Math.max(1, m), mean: Infinity };
const F16: Tolerance = { atol: () => 3e-3, mean: 5e-4 };

const MODELS: { name: string; file: (shared: string) => string; tol: Tolerance }[] = [
  { name: 'stories260K', file: (s) => path.join(s, 'models', 'stories260K.gguf'), tol: F32 },
  { name: 'rand-gqa-f32', file: (s) => path.join(s, 'reference', 'models', 'rand-gqa-f32.gguf'), tol: F32 },
  { name: 'rand-mha-f32', file: (s) => path.join(s, 'reference', 'models', 'rand-mha-f32.gguf'), tol: F32 },
  { name: 'rand-rope500k-f32', file: (s) => path.join(s, 'reference', 'models', 'rand-rope500k-f32.gguf'), tol: F32 },
  { name: 'rand-gqa-f16', file: (s) => path.join(s, 'reference', 'models', 'rand-gqa-f16.gguf'), tol: F16 },
  { name: 'rand-qwen2-f32', file: (s) => path.join(s, 'reference', 'models', 'rand-qwen2-f32.gguf'), tol: F32 },
  { name: 'rand-qwen3-f32', file: (s) => path.join(s, 'reference', 'models', 'rand-qwen3-f32.gguf'), tol: F32 },
];

describeShared('llama.cpp goldens', (shared) => {
  const kernels = native().systemInfo().available;

  for (const m of MODELS) {
    const goldenDir = path.join(shared, 'reference', 'golden', m.name);
    const cases = fs.readdirSync(goldenDir).filter((f) => f.endsWith('.json') && !f.startsWith('greedy'));

    // Every kernel variant the CPU runs must reproduce the goldens, not only the fastest.
    describe.each(kernels)(`${m.name} [%s kernels]`, (isa) => {
      let model: TransformerModel;
      let ctx: TransformerContext;
      beforeAll(() => {
        model = TransformerModel.load(m.file(shared), { kernels: isa, backend: testBackend() });
        ctx = model.createContext({ contextSize: 256, batchSize: 256, threads: 2 });
      });
      afterAll(() => {
        ctx?.dispose();
        model?.dispose();
      });

      test.each(cases)('logits of every position: %s', (file) => {
        const g: LogitsGolden = JSON.parse(fs.readFileSync(path.join(goldenDir, file), 'utf8'));
        const rows = goldenLogitRows(goldenDir, g);
        // A model without BOS has no token for an empty text, and so no logits (qwen goldens' `empty` case).
        if (g.tokens.length === 0) {
          expect(rows).toHaveLength(0);
          return;
        }
        // Tokens are fed as recorded (not re-tokenized); the whole case is one batch, like llama_decode.
        g.tokens.forEach((t, i) => (ctx.native.tokens[i] = t));
        expect(ctx.forward(g.tokens.length, 0)).toBe(model.config.nLayer);
        const problems: string[] = [];
        for (let row = 0; row < g.tokens.length; row++) {
          const { problem } = compareRow(ctx.logits(row), rows[row], m.tol);
          if (problem) problems.push(`row ${row}: ${problem}`);
        }
        expect(problems).toEqual([]);
      });

      test('greedy continuation through the KV cache', () => {
        const g: GreedyGolden = JSON.parse(fs.readFileSync(path.join(goldenDir, 'greedy_once_upon.json'), 'utf8'));
        // The model's own tokenizer (from the GGUF) gives the golden's prompt ids (BOS or none, as the file says).
        expect(model.tokenizer.encode(g.prompt)).toEqual(g.prompt_tokens);
        const stepLogits = readF32Rows(path.join(goldenDir, 'greedy_once_upon.f32'), model.config.nVocab);
        const seq = new Sequence(ctx);
        const run = seq.generate(g.prompt_tokens, {
          maxTokens: g.generated.length,
          stopAtEos: false,
          sampling: { temperature: 0, topK: 0, topP: 1, seed: 0 },
        });
        const ours: number[] = [];
        const problems: string[] = [];
        for (let step = run.next(); !step.done; step = run.next()) {
          if (!step.value) continue; // between two prompt chunks: no token
          const s = ours.length;
          // The logits that produced this token are still in the context's buffer; they are comparable
          // while our history equals the golden's.
          if (s < stepLogits.length && ours.every((t, i) => t === g.generated[i])) {
            const { problem } = compareRow(ctx.native.logits, stepLogits[s], m.tol);
            if (problem) problems.push(`step ${s}: ${problem}`);
          }
          ours.push(step.value.token);
        }
        // Tokens must match up to the first step whose golden margin is within the tolerance.
        const atol = m.tol.atol(Math.max(...Array.from(stepLogits[0], Math.abs)));
        const firstTight = g.steps.findIndex((st) => st.margin < 2 * atol);
        const mustMatch = firstTight < 0 ? g.generated.length : firstTight;
        expect(ours.slice(0, mustMatch)).toEqual(g.generated.slice(0, mustMatch));
        expect(problems).toEqual([]);
      });
    });
  }
});
