/**
 * config.json of a Hugging Face model folder: dispatched on `model_type` to the architecture that reads it
 * (lib/model/architectures). Missing or ill-typed keys are BAD_CONFIG errors naming the key; an unknown model_type,
 * or a feature the blocks do not implement, is UNSUPPORTED_ARCHITECTURE.
 */
import * as fs from 'fs';
import * as path from 'path';
import { ModelFileError } from '../errors';
import { architectureOfModelType, HF_MODEL_TYPES } from '../model/architectures';
import { ConfigReader, HfConfigBase } from './config_reader';

export type { HfLlamaConfig, HfOptConfig } from '../model/architectures';

/** config.json as the runtime reads it: the common geometry, plus what its architecture adds. */
export type HfConfig = HfConfigBase;

export const CONFIG_FILE = 'config.json';

/** Reads `dir/config.json`. */
export function readHfConfig(dir: string): HfConfig {
  const file = path.join(dir, CONFIG_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException)?.code;
    if (code === 'ENOENT') {
      throw new ModelFileError('FILE_NOT_FOUND', file, `the model folder has no ${CONFIG_FILE} (a Hugging Face model folder needs config.json and safetensors weights)`, { cause: err });
    }
    throw new ModelFileError('FILE_READ', file, `cannot read: ${(err as Error).message}`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ModelFileError('BAD_CONFIG', file, `is not valid JSON: ${(err as Error).message}`);
  }
  return parseHfConfig(json, file, path.basename(path.resolve(dir)));
}

/** Parses a config.json object; `file` names it in errors. */
export function parseHfConfig(json: unknown, file: string, name: string): HfConfig {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new ModelFileError('BAD_CONFIG', file, 'is not a JSON object');
  const c = new ConfigReader(json as Record<string, unknown>, file);
  const modelType = c.raw.model_type;
  if (typeof modelType !== 'string') throw new ModelFileError('BAD_CONFIG', file, '"model_type" is missing or not a string');
  const arch = architectureOfModelType(modelType);
  if (!arch?.hf) {
    throw new ModelFileError('UNSUPPORTED_ARCHITECTURE', file, `model_type '${modelType}' is not supported (supported: ${HF_MODEL_TYPES.join(', ')})`);
  }
  return arch.hf.read(c, name);
}
