/**
 * Tokenizers for GGUF models, matching llama.cpp token for token:
 *   createTokenizer(metadata) → SentencePiece ("llama") or byte-level BPE ("gpt2").
 *
 * Invalid metadata (missing/mismatched arrays, bad merges, special ids outside the vocabulary,
 * unknown tokenizer model or pre-tokenizer) throws AdaInferError with code 'TOKENIZER'.
 */
import { BpeTokenizer } from './bpe';
import { SpmTokenizer } from './spm';
import { Tokenizer, TokenizerMetadata, tokenizerError } from './types';

export function createTokenizer(meta: TokenizerMetadata): Tokenizer {
  if (meta === null || typeof meta !== 'object') throw tokenizerError('no tokenizer metadata');
  switch (meta.model) {
    case 'llama':
      return new SpmTokenizer(meta);
    case 'gpt2':
      return new BpeTokenizer(meta);
    default:
      throw tokenizerError(
        `unsupported tokenizer model '${String(meta.model)}' (tokenizer.ggml.model; supported: llama, gpt2)`,
      );
  }
}

export type { DecodeOptions, EncodeOptions, StreamDecoder, Tokenizer, TokenizerMetadata } from './types';
export { TokenType } from './types';
export { SpmTokenizer } from './spm';
export { BpeTokenizer, GPT2_PATTERN, LLAMA3_PATTERN, QWEN2_PATTERN, SUPPORTED_PRE_TOKENIZERS, splitWords } from './bpe';
export { cleanSpacesBatch, SpaceCleaner } from './stream_decoder';
export { HfTokenizer } from './hf';
export type { HfTokenizerFiles } from './hf';
