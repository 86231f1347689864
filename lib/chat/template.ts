/**
 * Chat templates: the Jinja template a model ships (GGUF `tokenizer.chat_template`, Hugging Face
 * `chat_template.jinja` / `tokenizer_config.json` `chat_template`; read by lib/chat/model_template.ts) turns a
 * list of messages into the prompt text the model was fine-tuned on. Rendered with @huggingface/jinja (the
 * engine of transformers.js), with the variables transformers and llama.cpp pass: `messages`,
 * `add_generation_prompt`, `bos_token`, `eos_token`.
 *
 * BOS, as llama.cpp does it (common/chat.cpp): many templates write `bos_token` themselves while the tokenizer also
 * prepends BOS; render() removes a leading BOS text when the tokenizer adds one (and a trailing EOS text when it
 * appends one), so that tokenizing the result with `addSpecial: true, parseSpecial: true` gives exactly one.
 */
import { Template } from '@huggingface/jinja';
import { AdaInferError, OptionError } from '../errors';

/** One message of a conversation. */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | (string & {});
  content: string;
}

/** What a template needs from the model's tokenizer. */
export interface ChatTemplateTokens {
  /** The BOS token's text ('' when the vocabulary has none). */
  bosToken: string;
  /** The EOS token's text ('' when none). */
  eosToken: string;
  /** Whether the tokenizer prepends BOS (then render() drops a leading BOS text). */
  addBos: boolean;
  /** Whether the tokenizer appends EOS (then render() drops a trailing EOS text). */
  addEos?: boolean;
}

/** What ChatTemplate.fromModel reads: Model.info of lib/api.ts. */
export interface ChatTemplateSource extends ChatTemplateTokens {
  /** The model's own template; undefined when its file has none. */
  chatTemplate?: string;
}

export interface RenderOptions {
  /** End with the header of the assistant's turn, so the model writes the reply (default true). */
  addGenerationPrompt?: boolean;
  /** More template variables (e.g. `enable_thinking` of some templates); the standard ones cannot be replaced. */
  variables?: Record<string, unknown>;
}

/**
 * Well-known templates by name (`template: 'chatml'`, `--template chatml`), each written to produce the format its
 * model family documents:
 *  - chatml: `<|im_start|>{role}\n{content}<|im_end|>\n` per message (Qwen, OpenHermes, ...);
 *  - llama3: Meta Llama 3 Instruct, `<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>`, BOS first;
 *  - llama2: Llama 2 Chat, `<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s>`.
 */
export const BUILTIN_TEMPLATES: Readonly<Record<string, string>> = {
  chatml:
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
  llama3:
    "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' %}" +
    '{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}' +
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
  llama2:
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}" +
    '{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}' +
    '{% for message in loop_messages %}' +
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}" +
    "{% else %}{% set content = message['content'] %}{% endif %}" +
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}" +
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}",
};

/** Does this look like template text rather than a (misspelt) built-in name? */
function looksLikeTemplate(text: string): boolean {
  return text.includes('{{') || text.includes('{%');
}

export class ChatTemplate {
  private readonly compiled: Template;

  /**
   * @param source Jinja template text.
   * @param tokens The tokenizer's BOS/EOS texts and whether it adds them.
   * @param name A built-in's name, 'model' for the model's own template, or undefined for a template passed in.
   */
  constructor(
    readonly source: string,
    readonly tokens: ChatTemplateTokens,
    readonly name?: string,
  ) {
    if (typeof source !== 'string' || source.length === 0) throw new OptionError('template', 'must be a non-empty string');
    try {
      this.compiled = new Template(source);
    } catch (err) {
      throw new AdaInferError('CHAT_TEMPLATE', `the chat template does not parse: ${(err as Error).message}`, { cause: err });
    }
  }

  /** The names of the built-in templates. */
  static get builtinNames(): string[] {
    return Object.keys(BUILTIN_TEMPLATES);
  }

  /**
   * The template of a loaded model (`model.info`), or `override`: a built-in name (BUILTIN_TEMPLATES) or Jinja text.
   * A model without a template and no override is a NO_CHAT_TEMPLATE error that names the fix.
   */
  static fromModel(model: { info: ChatTemplateSource }, override?: string): ChatTemplate {
    const info = model.info;
    const tokens: ChatTemplateTokens = { bosToken: info.bosToken, eosToken: info.eosToken, addBos: info.addBos, addEos: info.addEos };
    if (override !== undefined) return ChatTemplate.fromOverride(override, tokens);
    if (info.chatTemplate === undefined || info.chatTemplate.length === 0) {
      throw new AdaInferError(
        'NO_CHAT_TEMPLATE',
        `the model has no chat template (GGUF tokenizer.chat_template / tokenizer_config.json chat_template); ` +
          `pass one: the \`template\` option (Jinja text or a built-in name: ${ChatTemplate.builtinNames.join(', ')}) ` +
          `or \`--template FILE|NAME\` on the command line`,
      );
    }
    return new ChatTemplate(info.chatTemplate, tokens, 'model');
  }

  /** A built-in by name, or template text. */
  static fromOverride(override: string, tokens: ChatTemplateTokens): ChatTemplate {
    if (typeof override !== 'string' || override.length === 0) throw new OptionError('template', 'must be Jinja template text or a built-in name');
    if (Object.prototype.hasOwnProperty.call(BUILTIN_TEMPLATES, override)) return new ChatTemplate(BUILTIN_TEMPLATES[override], tokens, override);
    if (!looksLikeTemplate(override))
      throw new OptionError('template', `'${override}' is neither a built-in template (${ChatTemplate.builtinNames.join(', ')}) nor Jinja template text`);
    return new ChatTemplate(override, tokens);
  }

  /** The prompt text of `messages` (a leading BOS / trailing EOS text removed where the tokenizer adds its own). */
  render(messages: readonly ChatMessage[], options: RenderOptions = {}): string {
    checkMessages(messages);
    if (options === null || typeof options !== 'object') throw new OptionError('options', 'must be an object');
    const { bosToken, eosToken, addBos, addEos } = this.tokens;
    let text: string;
    try {
      text = this.compiled.render({
        ...options.variables,
        messages: messages.map((m) => ({ ...m })),
        add_generation_prompt: options.addGenerationPrompt ?? true,
        bos_token: bosToken,
        eos_token: eosToken,
      });
    } catch (err) {
      throw new AdaInferError('CHAT_TEMPLATE', `the chat template failed: ${(err as Error).message}`, { cause: err });
    }
    if (addBos && bosToken.length > 0 && text.startsWith(bosToken)) text = text.slice(bosToken.length);
    if (addEos && eosToken.length > 0 && text.endsWith(eosToken)) text = text.slice(0, text.length - eosToken.length);
    return text;
  }
}

/** Messages: an array of { role, content } with string values. */
export function checkMessages(messages: unknown): asserts messages is ChatMessage[] {
  if (!Array.isArray(messages)) throw new OptionError('messages', 'must be an array of { role, content }');
  messages.forEach((m, i) => {
    if (m === null || typeof m !== 'object' || typeof m.role !== 'string' || m.role.length === 0 || typeof m.content !== 'string')
      throw new OptionError('messages', `message ${i} must be { role: string, content: string }`);
  });
}
