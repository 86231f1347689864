/**
 * A model's identity for files derived from it (exit classifiers): sha256 over the GGUF header (metadata
 * and tensor table) and the first 4 KiB of every tensor's data (a Hugging Face folder: fingerprintHfFolder). Cheap to compute on multi-GB files, and two
 * files with the same header but different weights (a retrained or re-quantized model) still differ.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { GGUFFile } from '../gguf';
import type { HfFolder } from '../hf/folder';

const SAMPLE_BYTES = 4096;

export function fingerprintGGUF(file: GGUFFile): string {
  const hash = createHash('sha256');
  const fd = fs.openSync(file.path, 'r');
  try {
    const header = Buffer.alloc(file.dataOffset);
    fs.readSync(fd, header, 0, header.length, 0);
    hash.update(header);
    const sample = Buffer.alloc(SAMPLE_BYTES);
    for (const t of file.tensors) {
      const n = fs.readSync(fd, sample, 0, Math.min(SAMPLE_BYTES, t.byteSize), t.absoluteOffset);
      hash.update(sample.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return 'sha256:' + hash.digest('hex');
}

/**
 * The same for a Hugging Face folder: config.json, then each safetensors file's header and the first 4 KiB of each
 * tensor the model uses, in the order the runtime maps them.
 */
export function fingerprintHfFolder(folder: HfFolder): string {
  const hash = createHash('sha256');
  hash.update(fs.readFileSync(path.join(folder.dir, 'config.json')));
  const fds = folder.files.map((f) => fs.openSync(f, 'r'));
  try {
    folder.checkpoint.files.forEach((f, i) => {
      const header = Buffer.alloc(f.dataOffset);
      fs.readSync(fds[i], header, 0, header.length, 0);
      hash.update(header);
    });
    const sample = Buffer.alloc(SAMPLE_BYTES);
    for (const t of folder.tensors) {
      const n = fs.readSync(fds[t.file], sample, 0, Math.min(SAMPLE_BYTES, t.byteSize), t.offset);
      hash.update(sample.subarray(0, n));
    }
  } finally {
    for (const fd of fds) fs.closeSync(fd);
  }
  return 'sha256:' + hash.digest('hex');
}
