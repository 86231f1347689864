/**
 * THE list of architectures (one line each; see architecture.ts for what a plugin is), and the look-ups by GGUF
 * general.architecture and by config.json model_type.
 */
import { Architecture } from './architecture';
import { llama } from './llama';
import { opt } from './opt';
import { qwen2 } from './qwen2';
import { qwen3 } from './qwen3';

export const ARCHITECTURES: readonly Architecture[] = [llama, opt, qwen2, qwen3];

/** general.architecture values the runtime reads. */
export const GGUF_ARCHITECTURES: readonly string[] = ARCHITECTURES.filter((a) => a.gguf).map((a) => a.name);
/** config.json model_type values the runtime reads. */
export const HF_MODEL_TYPES: readonly string[] = ARCHITECTURES.flatMap((a) => a.hf?.modelTypes ?? []);

export function architectureByName(name: string): Architecture | undefined {
  return ARCHITECTURES.find((a) => a.name === name);
}

export function architectureOfGGUF(arch: string): Architecture | undefined {
  return ARCHITECTURES.find((a) => a.name === arch && a.gguf);
}

export function architectureOfModelType(modelType: string): Architecture | undefined {
  return ARCHITECTURES.find((a) => a.hf?.modelTypes.includes(modelType));
}

export type { Architecture, HfMapping, HfWantedTensor } from './architecture';
export type { HfLlamaConfig } from './llama';
export type { HfOptConfig } from './opt';
