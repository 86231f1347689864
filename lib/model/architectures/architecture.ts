/**
 * What an architecture plugin is. One file per architecture in this folder (llama.ts, opt.ts, qwen2.ts, qwen3.ts),
 * listed once in index.ts; its native half is native/architectures/<name>.cpp, listed once in
 * native/blocks/architecture.cpp. A plugin says how a GGUF file's metadata and a Hugging Face folder's config.json
 * become the runtime's config (TransformerConfig: the geometry the TypeScript side uses plus the keys the native
 * architecture reads), and which checkpoint tensor is which runtime (GGUF-style) tensor. Nothing outside this folder
 * branches on an architecture's name.
 */
import type { GGUFFile } from '../../gguf';
import type { ConfigReader, HfConfigBase } from '../../hf/config_reader';
import type { SafetensorsCheckpoint } from '../../safetensors/reader';
import type { TransformerConfig } from '../transformer';

/** A tensor an architecture needs from a Hugging Face checkpoint. */
export interface HfWantedTensor {
  /** The runtime's (GGUF-style) name. */
  name: string;
  /** The checkpoint's name. */
  hfName: string;
  /** HF (row-major) shape. */
  shape: number[];
  /** Q/K rows in rotate-half order where the GGUF of this architecture has adjacent pairs (convert permutes them). */
  neoxRows?: boolean;
}

/** How a Hugging Face folder of this architecture is read. */
export interface HfMapping<C extends HfConfigBase = HfConfigBase> {
  /** config.json model_type values. */
  readonly modelTypes: readonly string[];
  /** Whether the tokenizer prepends BOS when tokenizer_config.json does not say (LlamaTokenizer, GPT2Tokenizer do). */
  readonly addBos: boolean;
  /** config.json → the architecture's config (BAD_CONFIG / UNSUPPORTED_ARCHITECTURE through `c`). */
  read(c: ConfigReader, name: string): C;
  /** The runtime config of that folder. */
  config(c: C): TransformerConfig;
  /** Every tensor the blocks need, under the runtime's names, with the shape config.json implies. */
  tensors(c: C, checkpoint: SafetensorsCheckpoint, dir: string): HfWantedTensor[];
  /** The hyper-parameters, for error messages. */
  describe(c: C): string;
}

export interface Architecture {
  /** GGUF general.architecture, and the native architecture of the same name. */
  readonly name: string;
  /** The CUDA backend runs it (else 'auto' runs it on the CPU and 'cuda' refuses it). */
  readonly cuda: boolean;
  /** GGUF metadata → the runtime config; absent when the runtime reads no GGUF file of this architecture. */
  readonly gguf?: (file: GGUFFile) => TransformerConfig;
  /** (Each plugin types its mapping on its own config: HfMapping's methods take it bivariantly.) */
  readonly hf?: HfMapping;
}
