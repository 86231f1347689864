/**
 * What every Hugging Face config.json gives the runtime (HfConfigBase), and the typed reader of its keys that the
 * architectures (lib/model/architectures/*.ts) parse their own config.json keys with: a missing or ill-typed key is
 * BAD_CONFIG naming the key; a feature the blocks do not implement is UNSUPPORTED_ARCHITECTURE.
 */
import { ModelFileError } from '../errors';

export interface HfConfigBase {
  /** config.json model_type. */
  modelType: string;
  /** The folder's name. */
  name: string;
  /** max_position_embeddings. */
  contextLength: number;
  nLayer: number;
  /** hidden_size: the residual stream's width. */
  nEmbd: number;
  nHead: number;
  nKvHead: number;
  headDim: number;
  nFf: number;
  /** Rows of the embedding (vocab_size). */
  nVocab: number;
  /** config.json, as parsed (the tokenizer reads bos/eos ids from it). */
  raw: Record<string, unknown>;
}

export class ConfigReader {
  constructor(
    readonly raw: Record<string, unknown>,
    private readonly file: string,
  ) {}

  bad(message: string): never {
    throw new ModelFileError('BAD_CONFIG', this.file, message);
  }

  unsupported(message: string): never {
    throw new ModelFileError('UNSUPPORTED_ARCHITECTURE', this.file, message);
  }

  /** An integer >= min; required unless a fallback is given (null counts as absent). */
  int(key: string, min: number, fallback?: number): number {
    const v = this.raw[key];
    if (v === undefined || v === null) {
      if (fallback === undefined) this.bad(`"${key}" is missing`);
      return fallback;
    }
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) this.bad(`"${key}" must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return v;
  }

  num(key: string, fallback: number): number {
    const v = this.raw[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) this.bad(`"${key}" must be a positive number, got ${JSON.stringify(v)}`);
    return v;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.raw[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') this.bad(`"${key}" must be true or false, got ${JSON.stringify(v)}`);
    return v;
  }
}
