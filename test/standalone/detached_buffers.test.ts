/**
 * The native blocks never write memory they do not own (issue 20). A Context's buffers are views on
 * ArrayBuffers the blocks read and write in place; JS can detach one (structuredClone with transfer,
 * ArrayBuffer.prototype.transfer), after which its memory belongs to the receiver and is freed with it. Every
 * block call must then be refused with BUFFER_DETACHED, before it touches any buffer. The buffer properties
 * are read-only, so TypeScript cannot be silently disconnected from native by an assignment.
 */
import { fromNativeError, native, NativeContext, NativeModel, NativeTensorSpec } from '../../lib/bindings/native';
import { AdaInferError } from '../../lib/errors';
import { readGGUF } from '../../lib/gguf';
import { TransformerModel, configFromGGUF } from '../../lib/model/transformer';
import { BUNDLED_MODEL } from '../helpers';

const gguf = readGGUF(BUNDLED_MODEL);
const config = configFromGGUF(gguf);
const table = (): NativeTensorSpec[] =>
  gguf.tensors.map((t) => ({ name: t.name, type: t.type, dims: [...t.dims], offset: t.absoluteOffset }));

const BUFFERS = ['tokens', 'rowSeq', 'rowPos', 'logits', 'lensCandidates', 'lensIds', 'lensProbs', 'lensFeatures', 'exitStats'] as const;
type BufferName = (typeof BUFFERS)[number];

/** Every method of a Context that runs a block, with arguments that are valid for the context below. */
const BLOCK_CALLS: [string, (c: NativeContext) => void][] = [
  ['embed', (c) => c.embed(1)],
  ['attention', (c) => c.attention(0, 1)],
  ['fillKv', (c) => c.fillKv(1, 1)],
  ['mlp', (c) => c.mlp(0, 1)],
  ['head', (c) => c.head(0)],
  ['logitLens', (c) => c.logitLens(0, 2)],
  ['logitLensCandidates', (c) => c.logitLensCandidates(0, 2, 2)],
  ['syncLogits', (c) => c.syncLogits()],
  ['readHidden', (c) => c.readHidden(0, 1, new Float32Array(config.nEmbd))],
  ['writeHidden', (c) => c.writeHidden(0, 1, new Float32Array(config.nEmbd))],
  ['moveHidden', (c) => c.moveHidden(1, 0, 1)],
  ['setAttentionStatistics', (c) => c.setAttentionStatistics(true)],
  ['exitStatistics', (c) => c.exitStatistics(0, true)],
];

function caught(fn: () => void): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return undefined;
}

describe('a Context whose buffer is detached refuses every block call', () => {
  let model: NativeModel;
  beforeAll(() => {
    model = new (native().Model)(BUNDLED_MODEL, config, table());
  });
  afterAll(() => model.dispose());

  /** A context with valid inputs in its buffers (row 0: a token at position 0; two lens candidates). */
  function makeContext(): NativeContext {
    const c = new (native().Context)(model, { nCtx: 16, nBatch: 4, threads: 1, lensK: 4, lensMaxCandidates: 8 });
    c.tokens.set([1, 2, 3, 4]);
    c.rowSeq.fill(0);
    c.rowPos.set([0, 1, 2, 3]);
    c.lensCandidates.set([5, 6]);
    return c;
  }

  test('every block call works on a fresh context (the calls below are valid ones)', () => {
    const c = makeContext();
    c.embed(1);
    for (const [name, call] of BLOCK_CALLS) expect([name, caught(() => call(c))]).toEqual([name, undefined]);
    c.dispose();
  });

  test.each(BUFFERS)('%s transferred away: every call is BUFFER_DETACHED and the receiver memory is untouched', (name: BufferName) => {
    const c = makeContext();
    c.embed(1);
    const view = c[name];
    const received = structuredClone(view.buffer as ArrayBuffer, { transfer: [view.buffer as ArrayBuffer] });
    expect(view.byteLength).toBe(0); // detached
    const before = Buffer.from(new Uint8Array(received)).toString('hex');
    for (const [call, fn] of BLOCK_CALLS) {
      const e = caught(() => fn(c)) as { code?: string; message?: string } | undefined;
      expect([call, e?.code]).toEqual([call, 'BUFFER_DETACHED']);
      expect(e?.message).toContain(name);
      // and TypeScript sees it as a typed error
      const typed = fromNativeError(e);
      expect(typed).toBeInstanceOf(AdaInferError);
      expect(typed.code).toBe('BUFFER_DETACHED');
    }
    // nothing was written into the memory the receiver now owns
    expect(Buffer.from(new Uint8Array(received)).toString('hex')).toBe(before);
    // disposing still works, and a disposed context says so first
    c.dispose();
    expect(caught(() => c.head(0))).toMatchObject({ code: 'DISPOSED' });
  });

  test('ArrayBuffer.prototype.transfer detaches too', () => {
    const c = makeContext();
    const buffer = c.logits.buffer as ArrayBuffer & { transfer?: () => ArrayBuffer };
    if (typeof buffer.transfer !== 'function') {
      // Node 20 without the method: structuredClone above covers detaching
      c.dispose();
      return;
    }
    buffer.transfer();
    expect(caught(() => c.head(0))).toMatchObject({ code: 'BUFFER_DETACHED' });
    c.dispose();
  });

  test('buffer properties are read-only: assigning one throws and leaves the native view in place', () => {
    const c = makeContext();
    for (const name of BUFFERS) {
      const view = c[name];
      expect(() => ((c as unknown as Record<string, unknown>)[name] = new Float32Array(view.length))).toThrow(TypeError);
      expect(c[name]).toBe(view);
      expect(Object.getOwnPropertyDescriptor(c, name)).toMatchObject({ writable: false, configurable: false });
    }
    for (const name of ['backend', 'kernels', 'threads']) {
      expect(() => ((c as unknown as Record<string, unknown>)[name] = 'x')).toThrow(TypeError);
    }
    // still connected: a token written through the view is the one embedded
    c.tokens[0] = 7;
    c.embed(1);
    const h = new Float32Array(config.nEmbd);
    c.readHidden(0, 1, h);
    c.tokens[0] = 8;
    c.embed(1);
    const h8 = new Float32Array(config.nEmbd);
    c.readHidden(0, 1, h8);
    expect(Buffer.from(h.buffer).equals(Buffer.from(h8.buffer))).toBe(false);
    c.dispose();
  });

  test('a detached hidden-state argument is refused (it holds no floats)', () => {
    const c = makeContext();
    c.embed(1);
    const dst = new Float32Array(config.nEmbd);
    structuredClone(dst.buffer, { transfer: [dst.buffer] });
    expect(caught(() => c.readHidden(0, 1, dst))).toMatchObject({ code: 'INVALID_OPTION' });
    expect(caught(() => c.writeHidden(0, 1, dst))).toMatchObject({ code: 'INVALID_OPTION' });
    c.dispose();
  });
});

describe('through TransformerContext', () => {
  test('forward on a context whose tokens were transferred is an AdaInferError BUFFER_DETACHED', () => {
    const model = TransformerModel.load(BUNDLED_MODEL);
    const ctx = model.createContext({ contextSize: 16, batchSize: 4, threads: 1 });
    ctx.native.tokens[0] = 1;
    ctx.forward(1, 0);
    structuredClone(ctx.native.rowPos.buffer as ArrayBuffer, { transfer: [ctx.native.rowPos.buffer as ArrayBuffer] });
    expect(caught(() => ctx.forward(1, 0))).toMatchObject({ name: 'AdaInferError', code: 'BUFFER_DETACHED' });
    expect(caught(() => ctx.logits(0))).toMatchObject({ name: 'AdaInferError', code: 'BUFFER_DETACHED' });
    ctx.dispose();
    model.dispose();
  });
});
