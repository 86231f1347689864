/**
 * The Hugging Face test models of test/fixtures/hf (made by make_fixtures.py, expected outputs from an
 * independent float64 torch forward pass) and helpers to write broken variants of them.
 */
import * as fs from 'fs';
import * as path from 'path';
import { repoRoot } from '../helpers';

export const HF_FIXTURES = path.join(repoRoot(), 'test', 'fixtures', 'hf');
export const OPT_PRE = path.join(HF_FIXTURES, 'opt-pre');
export const OPT_POST = path.join(HF_FIXTURES, 'opt-post');
export const LLAMA = path.join(HF_FIXTURES, 'llama');
export const ALL_FIXTURES = { 'opt-pre': OPT_PRE, 'opt-post': OPT_POST, llama: LLAMA };
/** Qwen2ForCausalLM (q/k/v biases, untied head, F32) and Qwen3ForCausalLM (q/k norms, head_dim 32 with hidden 64, tied, F16). */
export const QWEN2 = path.join(HF_FIXTURES, 'qwen2');
export const QWEN3 = path.join(HF_FIXTURES, 'qwen3');
export const QWEN_FIXTURES = { qwen2: QWEN2, qwen3: QWEN3 };

export interface LensExpected {
  layer: number;
  top1: number;
  p1: number;
  p2: number;
  entropy: number;
}

export interface Expected {
  prompt: number[];
  logits: number[][];
  greedy: number[];
  greedyMinMargin: number;
  lens: LensExpected[];
  tokenize: { text: string; ids: number[]; idsNoSpecial: number[] }[];
}

export function expected(dir: string): Expected {
  return JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as Expected;
}

/** Copies a fixture folder into `into/name` (without expected.json) and returns the copy's path. */
export function copyFixture(dir: string, into: string, name: string): string {
  const out = path.join(into, name);
  fs.mkdirSync(out, { recursive: true });
  for (const f of fs.readdirSync(dir)) if (f !== 'expected.json') fs.copyFileSync(path.join(dir, f), path.join(out, f));
  return out;
}

export function editJson(file: string, edit: (j: Record<string, unknown>) => void): void {
  const j = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  edit(j);
  fs.writeFileSync(file, JSON.stringify(j, null, 2));
}

export interface StEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

/** Writes a safetensors file from a header object and data bytes (no checks: for making broken files). */
export function writeRawSafetensors(file: string, header: Record<string, unknown>, data: Uint8Array, headerLength?: number): void {
  let h = Buffer.from(JSON.stringify(header));
  const pad = (8 - (h.length % 8)) % 8;
  h = Buffer.concat([h, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(headerLength ?? h.length));
  fs.writeFileSync(file, Buffer.concat([len, h, Buffer.from(data)]));
}

/** Reads a safetensors file's header object and data section (for rewriting it). */
export function readRawSafetensors(file: string): { header: Record<string, StEntry | Record<string, string>>; data: Buffer } {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  return { header: JSON.parse(buf.subarray(8, 8 + n).toString('utf8')), data: buf.subarray(8 + n) };
}

/** Max |a - b| over two logit rows. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
