/**
 * Bad model files and paths, through the API (typed errors) and the CLI (non-zero exit, message on stderr).
 * Each broken file is made from the bundled model with one defect, so nothing else can be the cause.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { loadModel } from '../../lib';
import { GGUFTensorInfo, GGUFWriter, readGGUF } from '../../lib/gguf';
import { BUNDLED_MODEL, repoRoot, tmpDir } from '../helpers';

const CLI = path.join(repoRoot(), 'dist', 'lib', 'cli', 'main.js');

/** A tensor of the variant; `data` defaults to the original tensor's bytes. */
interface TensorOut {
  name: string;
  dims: number[];
  type: number;
  data?: Uint8Array;
}

const keep = (t: GGUFTensorInfo): TensorOut => ({ name: t.name, dims: t.dims, type: t.type });

interface Edit {
  /** Changes a tensor's description (return undefined to drop it). */
  tensor?: (t: GGUFTensorInfo) => TensorOut | undefined;
  metadata?: (w: GGUFWriter) => void;
}

/** Writes a copy of the bundled model with `edit` applied. */
function variant(dir: string, name: string, edit: Edit): string {
  const src = readGGUF(BUNDLED_MODEL);
  const bytes = fs.readFileSync(BUNDLED_MODEL);
  const w = new GGUFWriter();
  w.copyMetadataFrom(src);
  edit.metadata?.(w);
  for (const t of src.tensors) {
    const data = bytes.subarray(t.absoluteOffset, t.absoluteOffset + t.byteSize);
    const out = edit.tensor ? edit.tensor(t) : keep(t);
    if (out) w.addTensor(out.name, out.dims, out.type, out.data ?? data);
  }
  const file = path.join(dir, name + '.gguf');
  w.write(file);
  return file;
}

function runCli(args: string[]): { status: number | null; stderr: string; stdout: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60000 });
  return { status: r.status, stderr: r.stderr, stdout: r.stdout };
}

describe('bad model files', () => {
  const dir = tmpDir('adainfer-bad-');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  const size = fs.statSync(BUNDLED_MODEL).size;
  const cases: { name: string; make: () => string; code: string; message: RegExp }[] = [
    { name: 'non-existent path', make: () => path.join(dir, 'nope.gguf'), code: 'FILE_NOT_FOUND', message: /nope\.gguf/ },
    {
      name: 'wrong magic',
      make: () => {
        const f = path.join(dir, 'magic.gguf');
        const b = Buffer.from(fs.readFileSync(BUNDLED_MODEL));
        b.write('GGML', 0, 'latin1');
        fs.writeFileSync(f, b);
        return f;
      },
      code: 'GGUF_BAD_MAGIC',
      message: /magic/i,
    },
    {
      name: 'truncated header',
      make: () => {
        const f = path.join(dir, 'trunc-header.gguf');
        fs.writeFileSync(f, fs.readFileSync(BUNDLED_MODEL).subarray(0, 3000));
        return f;
      },
      code: 'GGUF_TRUNCATED',
      message: /truncated/i,
    },
    {
      name: 'tensor data running past the end of the file',
      make: () => {
        const f = path.join(dir, 'trunc-data.gguf');
        fs.writeFileSync(f, fs.readFileSync(BUNDLED_MODEL).subarray(0, size - 1000));
        return f;
      },
      code: 'TENSOR_OUT_OF_BOUNDS',
      message: /blk\.9\.|output_norm|past the end|beyond/i,
    },
    {
      name: 'unknown tensor type',
      make: () => {
        // The writer refuses unknown types, so patch the type id in the tensor table of a copy:
        // name, n_dims (u32), n_dims x u64 dims, type (u32).
        const f = path.join(dir, 'unknown-type.gguf');
        const b = Buffer.from(fs.readFileSync(BUNDLED_MODEL));
        const name = Buffer.from('blk.3.ffn_up.weight');
        const at = b.indexOf(name) + name.length;
        b.writeUInt32LE(99, at + 4 + 8 * b.readUInt32LE(at));
        fs.writeFileSync(f, b);
        return f;
      },
      code: 'UNSUPPORTED_TENSOR_TYPE',
      message: /blk\.3\.ffn_up\.weight/,
    },
    {
      name: 'tensor type without kernels (Q8_1)',
      make: () =>
        variant(dir, 'q8_1-type', {
          // a valid Q8_1 layout (36 bytes per 32 values): ggml's activation type, which no weight kernel reads
          tensor: (t) =>
            t.name === 'blk.0.attn_q.weight' ? { ...keep(t), type: 9, data: new Uint8Array((t.nElements / 32) * 36) } : keep(t),
        }),
      code: 'UNSUPPORTED_TENSOR_TYPE',
      message: /blk\.0\.attn_q\.weight/,
    },
    {
      name: 'missing tensor',
      make: () => variant(dir, 'missing', { tensor: (t) => (t.name === 'blk.4.attn_k.weight' ? undefined : keep(t)) }),
      code: 'MISSING_TENSOR',
      message: /blk\.4\.attn_k\.weight/,
    },
    {
      name: 'mismatched shapes',
      make: () =>
        variant(dir, 'shape', {
          tensor: (t) =>
            t.name === 'blk.2.ffn_down.weight'
              ? { ...keep(t), dims: [t.dims[0] / 2, t.dims[1] * 2] }
              : keep(t),
        }),
      code: 'SHAPE_MISMATCH',
      message: /blk\.2\.ffn_down\.weight/,
    },
    {
      name: 'unsupported architecture',
      make: () => variant(dir, 'arch', { metadata: (w) => w.setString('general.architecture', 'mamba') }),
      code: 'UNSUPPORTED_ARCHITECTURE',
      message: /mamba/,
    },
    {
      name: 'missing hyper-parameter',
      make: () => variant(dir, 'no-layers', { metadata: (w) => w.deleteMetadata('llama.block_count') }),
      code: 'MISSING_METADATA',
      message: /llama\.block_count/,
    },
  ];

  test.each(cases)('$name: typed API error and non-zero CLI exit', async ({ make, code, message }) => {
    const file = make();
    const err = await loadModel(file, { threads: 1 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code });
    expect((err as Error).message).toMatch(message);

    const r = runCli(['generate', '-m', file, '-p', 'Once', '-n', '4']);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`[${code}]`);
    expect(r.stderr).toMatch(message);
  });
});

describe('CLI', () => {
  test('generate --json prints one object with text, tokens and timings', () => {
    const r = runCli(['generate', '-p', 'Once upon a time', '-n', '16', '--temp', '0', '--threads', '1', '--json']);
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.tokens).toHaveLength(16);
    expect(out.promptTokens).toBe(5);
    expect(typeof out.text).toBe('string');
    expect(out.text.startsWith(', there was a little girl')).toBe(true);
    for (const k of ['loadMs', 'prefillMs', 'decodeMs', 'prefillTokensPerSecond', 'decodeTokensPerSecond'])
      expect(out.timings[k]).toBeGreaterThan(0);
  });

  test('generate streams the prompt and its continuation', () => {
    const r = runCli(['generate', '-p', 'Once upon a time', '-n', '8', '--temp', '0', '--threads', '1']);
    expect(r.status).toBe(0);
    expect(r.stdout.startsWith('Once upon a time, there was')).toBe(true);
  });

  test.each([
    [['generate', '-p', 'x', '--temp', '-1'], /--temp/],
    [['generate', '-p', 'x', '-n', 'many'], /-n/],
    [['generate', '-p', 'x', '--top-p', '2'], /--top-p/],
    [['generate', '-p', 'x', '--threads', '0'], /--threads/],
    [['generate', '-p', 'x', '--kernels', 'mmx'], /kernels/],
    [['generate'], /prompt/],
    [['frobnicate'], /unknown command/],
  ])('invalid arguments %j exit with status 2', (args, message) => {
    const r = runCli(args as string[]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(message);
  });
});
