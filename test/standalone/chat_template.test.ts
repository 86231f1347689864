/**
 * Chat templates (lib/chat/template.ts, lib/chat/model_template.ts): rendered by @huggingface/jinja, compared
 * with the exact text each format documents — ChatML (`<|im_start|>{role}\n{content}<|im_end|>\n`, the generation
 * prompt `<|im_start|>assistant\n`), Llama 3 (Meta's model card: `<|begin_of_text|><|start_header_id|>system
 * <|end_header_id|>\n\n{system}<|eot_id|>...<|start_header_id|>assistant<|end_header_id|>\n\n`) and Llama 2 Chat
 * (`<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {answer} </s><s>[INST] {user} [/INST]`); llama.cpp's BOS
 * rule; where a model file keeps its template (GGUF tokenizer.chat_template, tokenizer_config.json chat_template,
 * chat_template.jinja); and the typed errors.
 */
import * as fs from 'fs';
import * as path from 'path';
import { AdaInferError, ChatTemplate, loadModel, OptionError } from '../../lib';
import { GGUFWriter, readGGUF } from '../../lib/gguf';
import { hfChatTemplate } from '../../lib/chat/model_template';
import { BUNDLED_MODEL, repoRoot, tmpDir } from '../helpers';

const CHAT = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Hello' },
  { role: 'assistant', content: 'Hi.' },
  { role: 'user', content: 'Again' },
];

const NO_BOS = { bosToken: '<s>', eosToken: '</s>', addBos: false };

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as AdaInferError).code;
  }
  return undefined;
}

describe('built-in templates render the documented formats', () => {
  test('chatml', () => {
    const t = ChatTemplate.fromOverride('chatml', { bosToken: '', eosToken: '<|im_end|>', addBos: false });
    expect(t.render(CHAT)).toBe(
      '<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi.<|im_end|>\n' +
        '<|im_start|>user\nAgain<|im_end|>\n<|im_start|>assistant\n',
    );
    expect(t.render(CHAT.slice(0, 2), { addGenerationPrompt: false })).toBe('<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n');
  });

  test('llama3 (BOS written by the template)', () => {
    const tokens = { bosToken: '<|begin_of_text|>', eosToken: '<|eot_id|>', addBos: false };
    const expected =
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>' +
      '<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>' +
      '<|start_header_id|>assistant<|end_header_id|>\n\nHi.<|eot_id|>' +
      '<|start_header_id|>user<|end_header_id|>\n\nAgain<|eot_id|>' +
      '<|start_header_id|>assistant<|end_header_id|>\n\n';
    expect(ChatTemplate.fromOverride('llama3', tokens).render(CHAT)).toBe(expected);
    // Content is trimmed by this template.
    expect(ChatTemplate.fromOverride('llama3', tokens).render([{ role: 'user', content: '  Hello \n' }], { addGenerationPrompt: false })).toBe(
      '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>',
    );
  });

  test('llama2', () => {
    const t = ChatTemplate.fromOverride('llama2', NO_BOS);
    expect(t.render(CHAT)).toBe('<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHello [/INST] Hi. </s><s>[INST] Again [/INST]');
    // Roles must alternate: the template's raise_exception is a CHAT_TEMPLATE error.
    expect(codeOf(() => t.render([{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }]))).toBe('CHAT_TEMPLATE');
  });
});

describe("llama.cpp's BOS rule", () => {
  test('a leading BOS text is dropped when the tokenizer adds BOS, kept when it does not', () => {
    const text = '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n';
    const adds = ChatTemplate.fromOverride('llama3', { bosToken: '<|begin_of_text|>', eosToken: '<|eot_id|>', addBos: true });
    const keeps = ChatTemplate.fromOverride('llama3', { bosToken: '<|begin_of_text|>', eosToken: '<|eot_id|>', addBos: false });
    expect(keeps.render([{ role: 'user', content: 'Hi' }])).toBe(text);
    expect(adds.render([{ role: 'user', content: 'Hi' }])).toBe(text.slice('<|begin_of_text|>'.length));
    // Only the leading one: llama2 writes BOS before every turn.
    const l2 = ChatTemplate.fromOverride('llama2', { ...NO_BOS, addBos: true });
    expect(l2.render(CHAT)).toBe('[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHello [/INST] Hi. </s><s>[INST] Again [/INST]');
  });

  test('a trailing EOS text is dropped when the tokenizer appends EOS', () => {
    const t = new ChatTemplate("{% for m in messages %}{{ m['content'] + eos_token }}{% endfor %}", { bosToken: '', eosToken: '</s>', addBos: false, addEos: true });
    expect(t.render([{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }])).toBe('a</s>b');
  });

  test('template variables: bos_token, eos_token, add_generation_prompt, extra variables', () => {
    const t = new ChatTemplate('[{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|{{ flavour }}]', NO_BOS);
    expect(t.render([], { variables: { flavour: 'x' } })).toBe('[<s>|</s>|true|x]');
    expect(t.render([], { addGenerationPrompt: false, variables: { flavour: 'y' } })).toBe('[<s>|</s>|false|y]');
  });
});

describe('typed errors', () => {
  test('a model without a template: NO_CHAT_TEMPLATE naming the fix', () => {
    let err: AdaInferError | undefined;
    try {
      ChatTemplate.fromModel({ info: { ...NO_BOS } });
    } catch (e) {
      err = e as AdaInferError;
    }
    expect(err).toBeInstanceOf(AdaInferError);
    expect(err!.code).toBe('NO_CHAT_TEMPLATE');
    expect(err!.message).toMatch(/template/);
    expect(err!.message).toMatch(/--template FILE\|NAME/);
    // An override works for the same model.
    expect(ChatTemplate.fromModel({ info: { ...NO_BOS } }, 'chatml').name).toBe('chatml');
  });

  test('a template that does not parse, and one that fails while rendering', () => {
    expect(codeOf(() => new ChatTemplate('{% for m in messages %}', NO_BOS))).toBe('CHAT_TEMPLATE');
    expect(codeOf(() => new ChatTemplate("{{ raise_exception('no system role') }}", NO_BOS).render(CHAT))).toBe('CHAT_TEMPLATE');
  });

  test('an unknown built-in name, and bad messages, are OptionErrors', () => {
    expect(() => ChatTemplate.fromOverride('chatm1', NO_BOS)).toThrow(OptionError);
    expect(() => ChatTemplate.fromOverride('chatm1', NO_BOS)).toThrow(/chatml, llama3, llama2/);
    const t = ChatTemplate.fromOverride('chatml', NO_BOS);
    expect(() => t.render('hi' as never)).toThrow(OptionError);
    expect(() => t.render([{ role: 'user' }] as never)).toThrow(OptionError);
    expect(() => t.render([{ role: 'user', content: 3 }] as never)).toThrow(OptionError);
  });
});

describe('where model files keep their template', () => {
  const dir = tmpDir('adainfer-chat-template-');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";

  test('GGUF tokenizer.chat_template, with the vocabulary BOS/EOS texts (the bundled model: <s>, </s>, adds BOS)', async () => {
    const src = readGGUF(BUNDLED_MODEL);
    const bytes = fs.readFileSync(BUNDLED_MODEL);
    const w = new GGUFWriter().copyMetadataFrom(src).setString('tokenizer.chat_template', TEMPLATE + '{{ bos_token }}');
    for (const t of src.tensors) w.addTensor(t.name, t.dims, t.type, bytes.subarray(t.absoluteOffset, t.absoluteOffset + t.byteSize));
    const file = path.join(dir, 'with-template.gguf');
    w.write(file);
    const model = await loadModel(file, { threads: 1 });
    try {
      expect(model.info.chatTemplate).toBe(TEMPLATE + '{{ bos_token }}');
      expect(model.info).toMatchObject({ bosToken: '<s>', eosToken: '</s>', addBos: true, addEos: false });
      expect(ChatTemplate.fromModel(model).render([{ role: 'user', content: 'Hi' }])).toBe('<user>Hi<assistant><s>');
    } finally {
      await model.dispose();
    }
    // The bundled model itself has none.
    const plain = await loadModel(BUNDLED_MODEL, { threads: 1 });
    try {
      expect(plain.info.chatTemplate).toBeUndefined();
      expect(codeOf(() => ChatTemplate.fromModel(plain))).toBe('NO_CHAT_TEMPLATE');
    } finally {
      await plain.dispose();
    }
  });

  test('Hugging Face: tokenizer_config.json chat_template (string or named list) and chat_template.jinja', async () => {
    const fixture = path.join(repoRoot(), 'test', 'fixtures', 'hf', 'qwen2');
    const folder = path.join(dir, 'qwen2');
    fs.mkdirSync(folder);
    for (const f of fs.readdirSync(fixture)) fs.copyFileSync(path.join(fixture, f), path.join(folder, f));
    const cfgFile = path.join(folder, 'tokenizer_config.json');
    const cfg = JSON.parse(fs.readFileSync(cfgFile, 'utf8'));
    expect(hfChatTemplate(folder)).toBeUndefined();
    fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, chat_template: TEMPLATE }));
    expect(hfChatTemplate(folder)).toBe(TEMPLATE);
    fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, chat_template: [{ name: 'tool_use', template: 'T' }, { name: 'default', template: TEMPLATE }] }));
    expect(hfChatTemplate(folder)).toBe(TEMPLATE);
    fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, chat_template: 7 }));
    expect(codeOf(() => hfChatTemplate(folder))).toBe('TOKENIZER');
    fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, chat_template: TEMPLATE }));
    fs.writeFileSync(path.join(folder, 'chat_template.jinja'), 'J' + TEMPLATE);
    expect(hfChatTemplate(folder)).toBe('J' + TEMPLATE);
    fs.rmSync(path.join(folder, 'chat_template.jinja'));
    const model = await loadModel(folder, { threads: 1 });
    try {
      // Qwen2: no BOS token (bos_token null in tokenizer_config.json), EOS <|endoftext|>.
      expect(model.info).toMatchObject({ chatTemplate: TEMPLATE, eosToken: '<|endoftext|>', addBos: false });
      expect(ChatTemplate.fromModel(model).render([{ role: 'user', content: 'Hi' }])).toBe('<user>Hi<assistant>');
    } finally {
      await model.dispose();
    }
  });
});
