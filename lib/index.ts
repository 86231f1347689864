/** adainfer: LLM inference for Node.js with AdaInfer early exit. */
export { loadModel, Model, Session, DEFAULT_MODEL } from './api';
export type {
  ModelOptions,
  SessionOptions,
  GenerateOptions,
  GenerateResult,
  GenerationStream,
  ChatSessionOptions,
  ClassifyOptions,
  ClassifyResult,
  ExitSpec,
  ModelInfo,
  TokenEvent,
  StopReason,
  Timings,
  KvFill,
  GenerateBatchOptions,
  ClassifyBatchOptions,
  BatchGenerateResult,
  BatchClassifyResult,
  BatchClassifyItem,
  BatchSequenceResult,
  BatchPromptSpec,
  BatchKvFill,
  BatchStats,
  BatchTimings,
  KernelVariant,
} from './api';
/** Chat: templates (lib/chat/template.ts). */
export { ChatTemplate, BUILTIN_TEMPLATES } from './chat/template';
export { ChatSession } from './chat/session';
export type { ChatSendOptions } from './chat/session';
export type { ChatMessage, ChatTemplateTokens, ChatTemplateSource, RenderOptions } from './chat/template';
export { AdaInferError, AbortError, ModelFileError, OptionError, ContextOverflowError } from './errors';
export type { ErrorCode } from './errors';
/** Low-level, synchronous access (blocks the calling thread): the layer loop and native blocks. */
export { TransformerModel, TransformerContext } from './model/transformer';
export { readGGUF } from './gguf';
export { native } from './bindings/native';
export type { SystemInfo } from './bindings/native';
export { systemInfo } from './bindings/system_info';
/** Hugging Face checkpoints: safetensors headers, model folders, conversion to GGUF. */
export { readSafetensors, readCheckpoint } from './safetensors/reader';
export { readHfFolder } from './hf/folder';
export { convertHfToGGUF } from './hf/convert';
