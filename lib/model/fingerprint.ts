/**
 * A model's identity for files derived from it (exit classifiers): sha256 over the GGUF header (metadata
 * and tensor table) and the first 4 KiB of every tensor's data. Cheap to compute on multi-GB files, and two
 * files with the same header but different weights (a retrained or re-quantized model) still differ.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import { GGUFFile } from '../gguf';

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
