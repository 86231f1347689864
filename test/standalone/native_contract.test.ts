/**
 * The native addon checks everything itself, whatever the TypeScript side passes: tensor tables that lie
 * about offsets, shapes or types, and block calls with out-of-range layers, rows, positions or token ids
 * are errors with a code, never a crash.
 */
import { native, NativeContext, NativeModel, NativeTensorSpec } from '../../lib/bindings/native';
import { readGGUF } from '../../lib/gguf';
import { configFromGGUF } from '../../lib/model/transformer';
import { BUNDLED_MODEL } from '../helpers';

const gguf = readGGUF(BUNDLED_MODEL);
const config = configFromGGUF(gguf);
const table = (): NativeTensorSpec[] =>
  gguf.tensors.map((t) => ({ name: t.name, type: t.type, dims: [...t.dims], offset: t.absoluteOffset }));

function modelError(tensors: NativeTensorSpec[], hparams = config): unknown {
  try {
    new (native().Model)(BUNDLED_MODEL, hparams, tensors).dispose();
    return undefined;
  } catch (e) {
    return e;
  }
}

describe('native Model validates the tensor table', () => {
  test('a faithful table loads', () => {
    expect(modelError(table())).toBeUndefined();
  });

  test.each<[string, (t: NativeTensorSpec[]) => void, string]>([
    ['offset past the end', (t) => (t[5].offset = gguf.fileSize - 10), 'TENSOR_OUT_OF_BOUNDS'],
    ['offset beyond 2^53', (t) => (t[5].offset = Number.MAX_SAFE_INTEGER), 'TENSOR_OUT_OF_BOUNDS'],
    ['negative offset', (t) => (t[5].offset = -64), 'TENSOR_OUT_OF_BOUNDS'],
    ['wrong shape', (t) => (t.find((x) => x.name === 'blk.1.attn_v.weight')!.dims = [128, 128]), 'SHAPE_MISMATCH'],
    ['unknown type', (t) => (t.find((x) => x.name === 'blk.1.attn_v.weight')!.type = 77), 'UNSUPPORTED_TENSOR_TYPE'],
    ['missing tensor', (t) => t.splice(t.findIndex((x) => x.name === 'output_norm.weight'), 1), 'MISSING_TENSOR'],
    ['a file index past the files', (t) => (t[3].file = 1), 'TENSOR_OUT_OF_BOUNDS'],
    ['a negative file index', (t) => (t[3].file = -1), 'TENSOR_OUT_OF_BOUNDS'],
  ])('%s', (_, edit, code) => {
    const t = table();
    edit(t);
    expect(modelError(t)).toMatchObject({ code });
  });

  test.each<[string, Partial<typeof config>]>([
    ['zero layers', { nLayer: 0 }],
    ['heads not a multiple of kv heads', { nKvHead: 3 }],
    ['rope dims above head dim', { nRot: 64 }],
    ['huge vocabulary', { nVocab: 2 ** 40 }],
  ])('bad hyper-parameters: %s', (_, patch) => {
    expect(modelError(table(), { ...config, ...patch })).toMatchObject({ code: expect.stringMatching(/SHAPE_MISMATCH|INVALID_OPTION|MISSING_TENSOR/) });
  });

  test('the architecture registry: an unknown architecture, a missing or ill-typed key, named', () => {
    expect(modelError(table(), { ...config, architecture: 'gpt_neox' })).toMatchObject({
      code: 'INVALID_OPTION',
      message: expect.stringMatching(/hparams\.architecture 'gpt_neox' is not one of llama, opt, qwen2, qwen3/),
    });
    expect(modelError(table(), { ...config, nRot: undefined })).toMatchObject({ code: 'INVALID_OPTION', message: 'hparams.nRot must be a number' });
    expect(modelError(table(), { ...config, nHead: 2.5 })).toMatchObject({ code: 'INVALID_OPTION', message: 'hparams.nHead must be an integer' });
    // qwen3 on a llama file: the Q/K norms it needs are not there
    expect(modelError(table(), { ...config, architecture: 'qwen3' })).toMatchObject({ code: 'MISSING_TENSOR', message: expect.stringMatching(/attn_q_norm/) });
  });

  test('tensors spread over several files (shards) load from their own file', () => {
    // Two mappings of the same file: every tensor read from the second must give the same model.
    const t = table().map((x, i) => ({ ...x, file: i % 2 }));
    const m = new (native().Model)([BUNDLED_MODEL, BUNDLED_MODEL], config, t);
    expect(m.info().mappedBytes).toBe(2 * gguf.fileSize);
    m.dispose();
  });

  test('backend "cuda" where there is no usable device is BACKEND_UNAVAILABLE, and says why', () => {
    const cuda = native().systemInfo().cuda;
    expect(typeof cuda.compiled).toBe('boolean');
    if (cuda.available) return; // a machine with a GPU: test/gpu/run.sh covers the backend
    expect(cuda.reason.length).toBeGreaterThan(10);
    expect(() => new (native().Model)(BUNDLED_MODEL, config, table(), { backend: 'cuda' })).toThrow(
      expect.objectContaining({ code: 'BACKEND_UNAVAILABLE', message: cuda.reason }),
    );
  });

  test('an unknown backend is INVALID_OPTION', () => {
    expect(() => new (native().Model)(BUNDLED_MODEL, config, table(), { backend: 'tpu' as 'cpu' })).toThrow(
      expect.objectContaining({ code: 'INVALID_OPTION' }),
    );
  });

  test('a missing file', () => {
    expect(() => new (native().Model)('/nonexistent/model.gguf', config, table())).toThrow(/nonexistent/);
  });
});

describe('native Context validates block calls', () => {
  let model: NativeModel;
  let ctx: NativeContext;
  beforeAll(() => {
    model = new (native().Model)(BUNDLED_MODEL, config, table());
    ctx = new (native().Context)(model, { nCtx: 32, nBatch: 8, threads: 1, lensK: 4, lensMaxCandidates: 16 });
  });
  afterAll(() => {
    ctx.dispose();
    model.dispose();
  });

  test('buffers have the documented sizes', () => {
    expect(ctx.tokens).toHaveLength(8);
    expect(ctx.logits).toHaveLength(config.nVocab);
    expect(ctx.lensIds).toHaveLength(4);
    expect(ctx.lensFeatures).toHaveLength(4);
  });

  test.each<[string, (c: NativeContext) => void]>([
    ['layer below 0', (c) => c.attention(-1, 1)],
    ['layer past the last', (c) => c.mlp(config.nLayer, 1)],
    ['more rows than the batch', (c) => c.attention(0, 9)],
    ['zero rows', (c) => c.embed(0)],
    [
      'positions past the context',
      (c) => {
        c.rowSeq.fill(0);
        c.rowPos.set([29, 30, 31, 32]);
        c.attention(0, 4);
      },
    ],
    [
      'negative position',
      (c) => {
        c.rowPos[0] = -1;
        c.attention(0, 1);
      },
    ],
    [
      'a sequence past the last',
      (c) => {
        c.rowPos[0] = 0;
        c.rowSeq[0] = 1;
        c.fillKv(0, 1);
      },
    ],
    ['head row past the batch', (c) => c.head(8)],
    ['headRows past the batch', (c) => c.headRows(6, 3, new Float32Array(3 * config.nVocab))],
    ['headRows into too small a buffer', (c) => c.headRows(0, 2, new Float32Array(2 * config.nVocab - 1))],
    ['headRows with a negative count', (c) => c.headRows(0, -1, new Float32Array(0))],
    ['top-k above lensK', (c) => c.logitLens(0, 5)],
    ['more candidates than the buffer', (c) => c.logitLensCandidates(0, 17, 1)],
    [
      'a candidate outside the vocabulary',
      (c) => {
        c.lensCandidates[0] = -3;
        c.logitLensCandidates(0, 1, 1);
      },
    ],
    [
      'token id outside the vocabulary',
      (c) => {
        c.tokens[0] = config.nVocab;
        c.embed(1);
      },
    ],
  ])('%s is an INVALID_OPTION error', (_, call) => {
    expect(() => call(ctx)).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
  });

  test('logit lens: features agree with a softmax of the head logits', () => {
    ctx.tokens[0] = 1;
    ctx.rowSeq[0] = 0;
    ctx.rowPos[0] = 0;
    ctx.embed(1);
    for (let l = 0; l < config.nLayer; l++) {
      ctx.attention(l, 1);
      ctx.mlp(l, 1);
    }
    ctx.logitLens(0, 4);
    ctx.syncLogits();
    const z = Array.from(ctx.logits);
    const max = Math.max(...z);
    const e = z.map((v) => Math.exp(v - max));
    const sum = e.reduce((a, b) => a + b, 0);
    const p = e.map((v) => v / sum);
    const order = p.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
    const entropy = -p.reduce((a, v) => a + (v > 0 ? v * Math.log(v) : 0), 0);
    expect(Array.from(ctx.lensIds)).toEqual(order.slice(0, 4).map((x) => x[1]));
    order.slice(0, 4).forEach(([v], i) => expect(ctx.lensProbs[i]).toBeCloseTo(v, 6));
    expect(ctx.lensFeatures[0]).toBeCloseTo(order[0][0], 6);
    expect(ctx.lensFeatures[1]).toBeCloseTo(order[1][0], 6);
    expect(ctx.lensFeatures[2]).toBeCloseTo(order[0][0] - order[1][0], 6);
    expect(ctx.lensFeatures[3]).toBeCloseTo(entropy, 4);
  });

  test('headRows: the logits of several rows in one call are each row\'s head', () => {
    // Four positions through the whole model (each row a different token), then their heads one by one and at once.
    for (let t = 0; t < 4; t++) {
      ctx.tokens[t] = 3 + 17 * t;
      ctx.rowSeq[t] = 0;
      ctx.rowPos[t] = t;
    }
    ctx.embed(4);
    for (let l = 0; l < config.nLayer; l++) {
      ctx.attention(l, 4);
      ctx.mlp(l, 4);
    }
    const one = [0, 1, 2, 3].map((t) => {
      ctx.head(t);
      return Float32Array.from(ctx.logits);
    });
    expect(one[1]).not.toEqual(one[2]);
    const rows = new Float32Array(3 * config.nVocab);
    ctx.headRows(1, 3, rows);
    for (let i = 0; i < 3; i++) {
      const got = rows.subarray(i * config.nVocab, (i + 1) * config.nVocab);
      // F16 head: the row count may change the kernel's summation order, not the result beyond float rounding.
      let worst = 0;
      for (let v = 0; v < config.nVocab; v++) worst = Math.max(worst, Math.abs(got[v] - one[i + 1][v]));
      expect(worst).toBeLessThan(1e-4 * (1 + Math.max(...one[i + 1].map(Math.abs))));
    }
    ctx.headRows(0, 0, new Float32Array(0)); // no rows: nothing to do
  });

  test('logit lens over candidates: the full-vocabulary logits of those ids, renormalised', () => {
    ctx.logitLens(0, 4); // after the forward pass of the previous test
    ctx.syncLogits();
    const full = Float32Array.from(ctx.logits);
    const ids = [7, 300, 42, 5, 511];
    ids.forEach((id, i) => (ctx.lensCandidates[i] = id));
    ctx.logitLensCandidates(0, ids.length, 4);
    ctx.syncLogits();
    for (const id of ids) expect(ctx.logits[id]).toBeCloseTo(full[id], 5);
    const z = ids.map((id) => full[id]);
    const max = Math.max(...z);
    const sum = z.reduce((a, v) => a + Math.exp(v - max), 0);
    const ranked = ids.map((id, i) => ({ id, p: Math.exp(z[i] - max) / sum })).sort((a, b) => b.p - a.p || a.id - b.id);
    expect(Array.from(ctx.lensIds)).toEqual(ranked.slice(0, 4).map((r) => r.id));
    expect(ctx.lensFeatures[0]).toBeCloseTo(ranked[0].p, 6);
    expect(ctx.lensFeatures[2]).toBeCloseTo(ranked[0].p - ranked[1].p, 6);
  });

  test('the residual stream: rows read, written and moved (overlapping moves as memmove)', () => {
    const d = config.nEmbd;
    const rows = Float32Array.from({ length: 4 * d }, (_, i) => i * 0.25 - 7);
    ctx.writeHidden(2, 4, rows);
    ctx.moveHidden(3, 2, 4); // overlapping, forwards
    const out = new Float32Array(5 * d);
    ctx.readHidden(3, 4, out);
    expect(Array.from(out.subarray(0, 4 * d))).toEqual(Array.from(rows));
    ctx.moveHidden(0, 3, 4); // backwards
    ctx.readHidden(0, 4, out);
    expect(Array.from(out.subarray(0, 4 * d))).toEqual(Array.from(rows));
    // the embedding of a token is what readHidden returns for its row
    ctx.tokens[1] = 5;
    ctx.embed(2);
    const one = new Float32Array(d);
    ctx.readHidden(1, 1, one);
    expect(one.some((v) => v !== 0)).toBe(true);
  });

  test.each<[string, (c: NativeContext) => void]>([
    ['reading past the batch', (c) => c.readHidden(7, 2, new Float32Array(2 * config.nEmbd))],
    ['a buffer too small', (c) => c.readHidden(0, 2, new Float32Array(config.nEmbd))],
    ['a buffer of the wrong type', (c) => c.writeHidden(0, 1, new Float64Array(config.nEmbd) as unknown as Float32Array)],
    ['a move past the batch', (c) => c.moveHidden(5, 0, 4)],
    ['a negative row', (c) => c.moveHidden(0, -1, 1)],
  ])('row ops: %s is an INVALID_OPTION error', (_, call) => {
    expect(() => call(ctx)).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
  });

  test('the context reports its backend', () => {
    expect(ctx.backend).toBe('cpu');
    expect(model.info().backend).toBe('cpu');
  });

  test('a disposed context is a DISPOSED error', () => {
    const c = new (native().Context)(model, { nCtx: 4, nBatch: 1, threads: 1, lensK: 1, lensMaxCandidates: 1 });
    c.dispose();
    expect(() => c.embed(1)).toThrow(expect.objectContaining({ code: 'DISPOSED' }));
  });

  test('a context of something that is not a Model is refused', () => {
    expect(() => new (native().Context)({} as NativeModel, { nCtx: 4, nBatch: 1, threads: 1, lensK: 1, lensMaxCandidates: 1 })).toThrow(
      expect.objectContaining({ code: 'INVALID_OPTION' }),
    );
  });
});
