/** The tokenizer description stored in a GGUF's `tokenizer.ggml.*` metadata. */
import { ModelFileError } from '../errors';
import { GGUFFile, GGUFValue } from '../gguf';
import { TokenizerMetadata } from '../tokenizer';

const NONE = 0xffffffff;

export function tokenizerMetadataFromGGUF(file: GGUFFile): TokenizerMetadata {
  const md = file.metadata;
  const fail = (message: string): never => {
    throw new ModelFileError('TOKENIZER', file.path, message);
  };
  const model = md.get('tokenizer.ggml.model');
  if (typeof model !== 'string') fail('tokenizer.ggml.model is missing: the file has no tokenizer');
  const stringArray = (key: string, required: boolean): string[] | undefined => {
    const v = md.get(key);
    if (v === undefined) return required ? fail(`${key} is missing`) : undefined;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) fail(`${key} must be an array of strings`);
    return v as string[];
  };
  const numberArray = (key: string): number[] | undefined => {
    const v = md.get(key);
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'number')) fail(`${key} must be an array of numbers`);
    return v as number[];
  };
  const id = (key: string): number | undefined => {
    const v: GGUFValue | undefined = md.get(key);
    if (v === undefined) return undefined;
    const n = typeof v === 'bigint' ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isInteger(n)) return fail(`${key} must be an integer`);
    return n === NONE || n < 0 ? undefined : n;
  };
  const flag = (key: string): boolean | undefined => {
    const v = md.get(key);
    if (v === undefined) return undefined;
    return typeof v === 'boolean' ? v : fail(`${key} must be a boolean`);
  };
  const pre = md.get('tokenizer.ggml.pre');
  return {
    model: model as string,
    pre: typeof pre === 'string' ? pre : undefined,
    tokens: stringArray('tokenizer.ggml.tokens', true)!,
    scores: numberArray('tokenizer.ggml.scores'),
    tokenTypes: numberArray('tokenizer.ggml.token_type'),
    merges: stringArray('tokenizer.ggml.merges', false),
    bosId: id('tokenizer.ggml.bos_token_id'),
    eosId: id('tokenizer.ggml.eos_token_id'),
    unkId: id('tokenizer.ggml.unknown_token_id'),
    padId: id('tokenizer.ggml.padding_token_id'),
    eotId: id('tokenizer.ggml.eot_token_id'),
    addBos: flag('tokenizer.ggml.add_bos_token'),
    addEos: flag('tokenizer.ggml.add_eos_token'),
    addSpacePrefix: flag('tokenizer.ggml.add_space_prefix'),
  };
}
