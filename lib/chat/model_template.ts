/**
 * Where a model file keeps its chat template, and the BOS/EOS texts a template is rendered with:
 *  - GGUF: `tokenizer.chat_template` (a string);
 *  - Hugging Face folder: `chat_template.jinja` (what transformers writes since 4.43), else tokenizer_config.json's
 *    `chat_template` — a string, or a list of { name, template } whose "default" entry (else the first) is taken.
 * BOS/EOS texts are the vocabulary's tokens rendered as text (llama.cpp: token_to_piece with special tokens shown).
 */
import * as fs from 'fs';
import * as path from 'path';
import { TextDecoder } from 'util';
import { ModelFileError } from '../errors';
import { getString } from '../gguf';
import type { TransformerModel } from '../model/transformer';
import { TOKENIZER_CONFIG_FILE } from '../hf/folder';
import type { ChatTemplateSource } from './template';

export const HF_CHAT_TEMPLATE_FILE = 'chat_template.jinja';

/** The template (undefined when the model has none) and the tokens it is rendered with. */
export function chatTemplateSource(model: TransformerModel): ChatTemplateSource & { addEos: boolean } {
  const t = model.tokenizer;
  const text = (id: number | undefined) => (id === undefined ? '' : new TextDecoder().decode(t.tokenToPiece(id, true)));
  let chatTemplate: string | undefined;
  if (model.gguf) chatTemplate = getString(model.gguf, 'tokenizer.chat_template');
  else if (model.hf) chatTemplate = hfChatTemplate(model.hf.dir);
  return { chatTemplate, bosToken: text(t.bosId), eosToken: text(t.eosId), addBos: t.addBos, addEos: t.addEos };
}

/** A Hugging Face folder's chat template, or undefined. */
export function hfChatTemplate(dir: string): string | undefined {
  const jinjaFile = path.join(dir, HF_CHAT_TEMPLATE_FILE);
  if (fs.existsSync(jinjaFile)) return fs.readFileSync(jinjaFile, 'utf8');
  const cfgFile = path.join(dir, TOKENIZER_CONFIG_FILE);
  if (!fs.existsSync(cfgFile)) return undefined;
  let cfg: unknown;
  try {
    cfg = JSON.parse(fs.readFileSync(cfgFile, 'utf8'));
  } catch (err) {
    throw new ModelFileError('TOKENIZER', cfgFile, `is not valid JSON: ${(err as Error).message}`);
  }
  const value = cfg !== null && typeof cfg === 'object' ? (cfg as Record<string, unknown>).chat_template : undefined;
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  const named = Array.isArray(value) ? value.filter((e) => e && typeof e === 'object' && typeof e.name === 'string' && typeof e.template === 'string') : [];
  if (!Array.isArray(value) || named.length !== value.length || named.length === 0)
    throw new ModelFileError('TOKENIZER', cfgFile, 'chat_template must be a string or a list of { "name", "template" }');
  return (named.find((e) => e.name === 'default') ?? named[0]).template as string;
}
