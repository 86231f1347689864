/**
 * Quantized and BF16 models against llama.cpp's goldens (../shared/reference, README section 3.5 for the
 * tolerances): logits of every position for every case, and the greedy continuation through the KV cache,
 * for every kernel variant this CPU runs.
 * Tolerances (absolute, per logit):
 *   Q8_0, Q4_0, Q4_K_M, Q6_K: atol = 8e-2, mean |delta| <= 1e-2
 *   BF16: atol = 2.5e-2, mean |delta| <= 3e-3
 * Argmax must agree wherever the golden top-1/top-2 gap is >= 2 * atol.
 * Greedy: the integer kernels quantize activations exactly as ggml does (Q8_0 / Q8_K blocks), so the
 * continuation follows the golden much longer than the margin rule alone requires: rand-gqa-q8_0 must match
 * its first 32 tokens (the golden's smallest margin, 6.3e-4, is at step 32); every model must match up to
 * the first step whose golden margin is below 1e-2 (README: greedy runs of different llama.cpp builds diverge
 * only at steps with margins <= 3.4e-3).
 */
import * as fs from 'fs';
import * as path from 'path';
import { Sequence } from '../../lib/engine/sequence';
import { TransformerContext, TransformerModel } from '../../lib/model/transformer';
import { native } from '../../lib/bindings/native';
import { describeShared, readF32Rows, testBackend } from '../helpers';
import { compareRow, goldenLogitRows, GreedyGolden, LogitsGolden, Tolerance } from './golden_compare';

const QUANT: Tolerance = { atol: () => 8e-2, mean: 1e-2 };
const BF16: Tolerance = { atol: () => 2.5e-2, mean: 3e-3 };

const MODELS: { name: string; tol: Tolerance; greedyAtLeast: number }[] = [
  { name: 'rand-gqa-q8_0', tol: QUANT, greedyAtLeast: 32 },
  { name: 'rand-gqa-q4_0', tol: QUANT, greedyAtLeast: 0 },
  { name: 'rand-gqa-q4_k_m', tol: QUANT, greedyAtLeast: 0 },
  { name: 'rand-gqa-q6_k', tol: QUANT, greedyAtLeast: 0 },
  { name: 'rand-gqa-bf16', tol: BF16, greedyAtLeast: 0 },
  { name: 'rand-qwen2-q8_0', tol: QUANT, greedyAtLeast: 0 },
  { name: 'rand-qwen3-q8_0', tol: QUANT, greedyAtLeast: 0 },
];

describeShared('llama.cpp goldens, quantized models', (shared) => {
  const kernels = native().systemInfo().available;

  for (const m of MODELS) {
    const goldenDir = path.join(shared, 'reference', 'golden', m.name);
    const file = path.join(shared, 'reference', 'models', `${m.name}.gguf`);
    const cases = fs.readdirSync(goldenDir).filter((f) => f.endsWith('.json') && !f.startsWith('greedy'));

    describe.each(kernels)(`${m.name} [%s kernels]`, (isa) => {
      let model: TransformerModel;
      let ctx: TransformerContext;
      beforeAll(() => {
        model = TransformerModel.load(file, { kernels: isa, backend: testBackend() });
        ctx = model.createContext({ contextSize: 256, batchSize: 256, threads: 2 });
      });
      afterAll(() => {
        ctx?.dispose();
        model?.dispose();
      });

      test.each(cases)('logits of every position: %s', (caseFile) => {
        const g: LogitsGolden = JSON.parse(fs.readFileSync(path.join(goldenDir, caseFile), 'utf8'));
        const rows = goldenLogitRows(goldenDir, g);
        // A model without BOS has no token for an empty text, and so no logits (qwen goldens' `empty` case).
        if (g.tokens.length === 0) {
          expect(rows).toHaveLength(0);
          return;
        }
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
          if (s < stepLogits.length && ours.every((t, i) => t === g.generated[i])) {
            const { problem } = compareRow(ctx.native.logits, stepLogits[s], m.tol);
            if (problem) problems.push(`step ${s}: ${problem}`);
          }
          ours.push(step.value.token);
        }
        const firstTight = g.steps.findIndex((st) => st.margin < 1e-2);
        const mustMatch = Math.max(m.greedyAtLeast, firstTight < 0 ? g.generated.length : firstTight);
        expect(ours.slice(0, mustMatch)).toEqual(g.generated.slice(0, mustMatch));
        expect(problems).toEqual([]);
      });
    });
  }
});
