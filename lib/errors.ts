/**
 * Typed errors. Every failure the runtime reports is an AdaInferError whose `code` names the problem,
 * so callers can branch on it and the CLI can exit non-zero with the message.
 */

export type ErrorCode =
  // files
  | 'FILE_NOT_FOUND'
  | 'FILE_READ'
  /** An output path (a file or folder a command writes) cannot be written. */
  | 'OUTPUT_PATH'
  | 'GGUF_BAD_MAGIC'
  | 'GGUF_UNSUPPORTED_VERSION'
  | 'GGUF_TRUNCATED'
  | 'GGUF_CORRUPT'
  | 'TENSOR_OUT_OF_BOUNDS'
  | 'UNSUPPORTED_TENSOR_TYPE'
  | 'BAD_SAFETENSORS'
  | 'MISSING_SHARD'
  // model structure
  | 'UNSUPPORTED_ARCHITECTURE'
  | 'MISSING_METADATA'
  | 'MISSING_TENSOR'
  | 'SHAPE_MISMATCH'
  | 'TOKENIZER'
  | 'BAD_CONFIG'
  // derived files
  | 'EXIT_FILE'
  | 'DATA_FILE'
  // use
  | 'INVALID_OPTION'
  | 'CONTEXT_OVERFLOW'
  | 'DISPOSED'
  /** A buffer of a native context was detached (transferred away); the context refuses every further call. */
  | 'BUFFER_DETACHED'
  | 'BUSY'
  | 'ABORTED'
  /** Chat with a model whose file has no chat template, and none was given (`template` / `--template`). */
  | 'NO_CHAT_TEMPLATE'
  /** A chat template that does not parse, or fails while it renders (raise_exception, a type error). */
  | 'CHAT_TEMPLATE'
  // compute backends
  | 'BACKEND_UNAVAILABLE'
  /** An optional package a feature needs (vega for report.html) is not installed. */
  | 'MISSING_PACKAGE'
  | 'OUT_OF_MEMORY'
  // the batch queue (lib/queue/)
  /** Redis cannot be reached at the --queue URL. */
  | 'QUEUE_UNREACHABLE'
  /** A batch job is not in Redis (never submitted, or Redis lost its data) or not what the command expects. */
  | 'QUEUE_JOB'
  | 'NATIVE'
  | 'INTERNAL';

export class AdaInferError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AdaInferError';
    this.code = code;
  }
}

/** A model file (GGUF, safetensors) is unreadable, malformed or unsupported. */
export class ModelFileError extends AdaInferError {
  readonly path: string;
  constructor(code: ErrorCode, path: string, message: string, options?: { cause?: unknown }) {
    super(code, `${path}: ${message}`, options);
    this.name = 'ModelFileError';
    this.path = path;
  }
}

/** An option passed to the API or the CLI is invalid. */
export class OptionError extends AdaInferError {
  readonly option: string;
  constructor(option: string, message: string) {
    super('INVALID_OPTION', `invalid option ${option}: ${message}`);
    this.name = 'OptionError';
    this.option = option;
  }
}

/** The prompt plus the tokens to generate do not fit in the session's context. */
export class ContextOverflowError extends AdaInferError {
  constructor(message: string) {
    super('CONTEXT_OVERFLOW', message);
    this.name = 'ContextOverflowError';
  }
}

/**
 * A call was cancelled (an AbortSignal fired, a stream was left early, the session was disposed while it ran).
 * Every cancelled call of the API rejects with this error, however far it got: before it started, mid-prompt,
 * mid-generation, mid-batch or mid-classification. It is an AdaInferError with code 'ABORTED' and, as Node's own
 * cancellations (fetch, timers/promises, fs), has the name 'AbortError'; `cause` is the signal's reason when a
 * signal fired.
 */
export class AbortError extends AdaInferError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ABORTED', message, options);
    this.name = 'AbortError';
  }
}

/** Serializable form, for crossing the worker boundary. */
export interface SerializedError {
  name: string;
  code: ErrorCode;
  message: string;
  path?: string;
  option?: string;
}

export function serializeError(err: unknown): SerializedError {
  if (err instanceof AdaInferError) {
    const out: SerializedError = { name: err.name, code: err.code, message: err.message };
    if (err instanceof ModelFileError) out.path = err.path;
    if (err instanceof OptionError) out.option = err.option;
    return out;
  }
  const message = err instanceof Error ? err.message : String(err);
  return { name: 'AdaInferError', code: 'INTERNAL', message };
}

export function deserializeError(e: SerializedError): AdaInferError {
  let err: AdaInferError;
  switch (e.name) {
    case 'ModelFileError': {
      err = new ModelFileError(e.code, e.path ?? '', '');
      err.message = e.message;
      break;
    }
    case 'OptionError':
      err = new OptionError(e.option ?? '', '');
      err.message = e.message;
      break;
    case 'ContextOverflowError':
      err = new ContextOverflowError(e.message);
      break;
    default:
      if (e.code === 'ABORTED') {
        err = new AbortError(e.message);
        break;
      }
      err = new AdaInferError(e.code, e.message);
  }
  return err;
}
