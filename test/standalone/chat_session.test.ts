/**
 * ChatSession (lib/chat/session.ts): history, the prompt of turn n+1 built on the ids turn n left in the cache
 * (measured by the prompt tokens actually evaluated: promptTokens - reusedPromptTokens), send and stream agreeing,
 * stop at EOS / end-of-turn tokens, and the errors. Models: the bundled TinyStories model (SentencePiece, adds BOS)
 * with a template given here, and the Qwen2 fixture folder (byte-level BPE with <|im_start|>/<|im_end|>, no BOS)
 * with the built-in ChatML template.
 */
import * as fs from 'fs';
import * as path from 'path';
import { GGUFWriter, readGGUF } from '../../lib/gguf';
import { AdaInferError, ChatTemplate, loadModel, Model, OptionError, readHfFolder } from '../../lib';
import { BUNDLED_MODEL, repoRoot, tmpDir } from '../helpers';

// Story-style turns: the user writes the start of a story, the model continues it until EOS (</s>).
const STORY_TEMPLATE =
  "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}{{ m['content'] + eos_token }}{% else %}{{ m['content'] }}{% endif %}{% endfor %}";

describe('ChatSession on the bundled model (SentencePiece, BOS added by the tokenizer)', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(undefined, { threads: 1 });
  });
  afterAll(async () => {
    await model?.dispose();
  });

  test('turn 2 evaluates only its new tokens: the cache of turn 1 (prompt and reply) is reused', async () => {
    const chat = await model.createChatSession({ template: STORY_TEMPLATE, contextSize: 256 });
    try {
      const first = await chat.send('Once upon a time', { temperature: 0, maxTokens: 60 });
      // The prompt: BOS once (the template's <s> removed, the tokenizer's kept), then the text.
      expect(first.promptTokens).toBe((await model.tokenize('Once upon a time')).length);
      expect(first.reusedPromptTokens).toBe(0);
      expect(first.tokens.length).toBeGreaterThan(0);
      expect(chat.history).toEqual([
        { role: 'user', content: 'Once upon a time' },
        { role: 'assistant', content: first.text },
      ]);

      const second = await chat.send('The dog', { temperature: 0, maxTokens: 8 });
      // New text of turn 2: </s> after the reply, then the message.
      const rest = await model.tokenize('</s>The dog', { addSpecial: false, parseSpecial: true });
      expect(rest[0]).toBe(model.info.eosId);
      expect(second.promptTokens).toBe(first.promptTokens + first.tokens.length + rest.length);
      // After an EOS stop every reply token was evaluated; after maxTokens the last one was not.
      const evaluated = second.promptTokens - second.reusedPromptTokens;
      expect(evaluated).toBe(rest.length + (first.stopReason === 'eos' ? 0 : 1));
      expect(chat.history.map((m) => m.role)).toEqual(['user', 'assistant', 'user', 'assistant']);

      // The same conversation from scratch (a new chat, whole text tokenized) gives the same reply.
      const fresh = await model.createSession({ contextSize: 256 });
      try {
        const text = ChatTemplate.fromOverride(STORY_TEMPLATE, model.info).render(chat.history.slice(0, 3));
        const alone = await fresh.generate(text, { temperature: 0, maxTokens: 8, parseSpecial: true });
        expect(alone.text).toBe(second.text);
      } finally {
        await fresh.dispose();
      }
    } finally {
      await chat.dispose();
    }
  });

  test('the reply stops at an end-of-turn token (EOG in the vocabulary), which is not part of it; the next turn reuses every reply token', async () => {
    // A copy of the bundled model whose vocabulary names "." as its end-of-turn token (tokenizer.ggml.eot_token_id):
    // llama.cpp counts EOT among the end-of-generation tokens, and so does the chat.
    const dot = (await model.tokenize('.', { addSpecial: false })).at(-1)!;
    const dir = tmpDir('adainfer-chat-eot-');
    const file = path.join(dir, 'eot.gguf');
    const src = readGGUF(BUNDLED_MODEL);
    const bytes = fs.readFileSync(BUNDLED_MODEL);
    const w = new GGUFWriter().copyMetadataFrom(src).setU32('tokenizer.ggml.eot_token_id', dot);
    for (const t of src.tensors) w.addTensor(t.name, t.dims, t.type, bytes.subarray(t.absoluteOffset, t.absoluteOffset + t.byteSize));
    w.write(file);
    const eot = await loadModel(file, { threads: 1 });
    try {
      const chat = await eot.createChatSession({ template: STORY_TEMPLATE, contextSize: 256 });
      const r = await chat.send('Once upon a time', { temperature: 0, maxTokens: 100 });
      expect(r.stopReason).toBe('eos');
      expect(r.tokens).not.toContain(dot);
      expect(r.tokens.length).toBeGreaterThan(3);
      // The same text without the end-of-turn token: the full model's greedy continuation up to its first ".".
      const plain = await model.createSession({ contextSize: 256 });
      const g = await plain.generate('Once upon a time', { temperature: 0, maxTokens: 100 });
      await plain.dispose();
      expect(r.tokens).toEqual(g.tokens.slice(0, g.tokens.indexOf(dot)));
      // Every reply token was evaluated (the EOT was sampled after the last one): turn 2 evaluates only its new text.
      const r2 = await chat.send('The dog', { temperature: 0, maxTokens: 5 });
      const rest = await eot.tokenize('</s>The dog', { addSpecial: false, parseSpecial: true });
      expect(r2.promptTokens - r2.reusedPromptTokens).toBe(rest.length);
      await chat.dispose();
    } finally {
      await eot.dispose();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('stream and send agree; a stop string ends the reply; an aborted turn leaves the history as it was', async () => {
    const a = await model.createChatSession({ template: STORY_TEMPLATE, systemPrompt: 'Tom', contextSize: 256 });
    const b = await model.createChatSession({ template: STORY_TEMPLATE, systemPrompt: 'Tom', contextSize: 256 });
    try {
      for (const message of ['Once upon a time', 'One day']) {
        const sent = await a.send(message, { temperature: 0, maxTokens: 30 });
        const it = b.stream(message, { temperature: 0, maxTokens: 30 });
        let text = '';
        const tokens: number[] = [];
        let step = await it.next();
        for (; !step.done; step = await it.next()) {
          text += step.value.text;
          tokens.push(step.value.token);
        }
        expect(text).toBe(sent.text);
        expect(tokens).toEqual(sent.tokens);
        expect(step.value).toMatchObject({ text: sent.text, stopReason: sent.stopReason, promptTokens: sent.promptTokens, reusedPromptTokens: sent.reusedPromptTokens });
      }
      expect(b.history).toEqual(a.history);
      expect(a.history[0]).toEqual({ role: 'system', content: 'Tom' });

      const before = a.history;
      const controller = new AbortController();
      let n = 0;
      await expect(
        (async () => {
          for await (const e of a.stream('Then', { temperature: 0, maxTokens: 50, signal: controller.signal })) if (e && ++n === 3) controller.abort();
        })(),
      ).rejects.toMatchObject({ name: 'AbortError', code: 'ABORTED' });
      expect(a.history).toEqual(before);
      // Leaving the loop early: no error, history unchanged, and the chat answers again afterwards.
      for await (const e of a.stream('Then', { temperature: 0, maxTokens: 50 })) if (e) break;
      expect(a.history).toEqual(before);

      const plain = await b.send('Then', { temperature: 0, maxTokens: 30 });
      const cut = plain.text.slice(5, 9);
      const stopped = await a.send('Then', { temperature: 0, maxTokens: 30, stop: [cut] });
      expect(stopped).toMatchObject({ stopReason: 'stop', stopString: cut, text: plain.text.slice(0, plain.text.indexOf(cut)) });
      expect(a.history[a.history.length - 1]).toEqual({ role: 'assistant', content: stopped.text });
      // A reply cut by a stop string: the next turn tokenizes the whole text again (still a correct prompt).
      const next = await a.send('The end', { temperature: 0, maxTokens: 4 });
      expect(next.promptTokens).toBe((await model.tokenize(ChatTemplate.fromOverride(STORY_TEMPLATE, model.info).render(a.history.slice(0, -2).concat([{ role: 'user', content: 'The end' }])), { parseSpecial: true })).length);
    } finally {
      await a.dispose();
      await b.dispose();
    }
  });

  test('errors: no template, a misspelt option, a prompt option, two turns at once', async () => {
    await expect(model.createChatSession()).rejects.toMatchObject({ code: 'NO_CHAT_TEMPLATE' });
    await expect(model.createChatSession({ systemPromt: 'x' } as never)).rejects.toBeInstanceOf(OptionError);
    await expect(model.createChatSession({ template: 'chatm1' })).rejects.toMatchObject({ code: 'INVALID_OPTION', option: 'template' });
    const chat = await model.createChatSession({ template: STORY_TEMPLATE, contextSize: 64 });
    try {
      await expect(chat.send('Hi', { addBos: false } as never)).rejects.toMatchObject({ code: 'INVALID_OPTION', option: 'addBos' });
      await expect(chat.send('Hi', { maxToken: 3 } as never)).rejects.toMatchObject({ code: 'INVALID_OPTION', option: 'maxToken' });
      const one = chat.send('Once', { temperature: 0, maxTokens: 5 });
      await expect(chat.send('Twice', { maxTokens: 5 })).rejects.toMatchObject({ code: 'BUSY' });
      await one;
      expect(chat.history.length).toBe(2);
      // A conversation longer than the context: CONTEXT_OVERFLOW, history unchanged.
      await expect(chat.send('Once upon a time '.repeat(30), { maxTokens: 2 })).rejects.toMatchObject({ code: 'CONTEXT_OVERFLOW' });
      expect(chat.history.length).toBe(2);
    } finally {
      await chat.dispose();
    }
    expect(AdaInferError).toBeDefined();
  });
});

describe('ChatSession with ChatML on the Qwen2 fixture (byte-level BPE, <|im_start|> / <|im_end|>, no BOS)', () => {
  test('special tokens are parsed, <|im_end|> ends generation, turn 2 reuses turn 1', async () => {
    const model = await loadModel(path.join(repoRoot(), 'test', 'fixtures', 'hf', 'qwen2'), { threads: 1 });
    try {
      const [imStart, imEnd] = [318, 319];
      expect(await model.tokenize('<|im_start|><|im_end|>', { addSpecial: false, parseSpecial: true })).toEqual([imStart, imEnd]);
      const chat = await model.createChatSession({ template: 'chatml', systemPrompt: 'Be brief.', contextSize: 128 });
      try {
        const r1 = await chat.send('Hello', { temperature: 0, maxTokens: 6 });
        const text1 = '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n';
        const ids1 = await model.tokenize(text1, { parseSpecial: true });
        expect(ids1.filter((t) => t === imStart).length).toBe(3);
        expect(r1.promptTokens).toBe(ids1.length);
        const r2 = await chat.send('Again', { temperature: 0, maxTokens: 6 });
        const rest = await model.tokenize('<|im_end|>\n<|im_start|>user\nAgain<|im_end|>\n<|im_start|>assistant\n', { addSpecial: false, parseSpecial: true });
        expect(r2.promptTokens).toBe(ids1.length + r1.tokens.length + rest.length);
        expect(r2.promptTokens - r2.reusedPromptTokens).toBe(rest.length + (r1.stopReason === 'eos' ? 0 : 1));
      } finally {
        await chat.dispose();
      }
      // <|im_end|> (and <|endoftext|>) end generation, as llama.cpp marks them: a reply stops there (stopAtEos).
      const tokenizer = readHfFolder(path.join(repoRoot(), 'test', 'fixtures', 'hf', 'qwen2')).tokenizer;
      expect([tokenizer.isEog(imEnd), tokenizer.isEog(317), tokenizer.isEog(imStart)]).toEqual([true, true, false]);
    } finally {
      await model.dispose();
    }
  });
});
