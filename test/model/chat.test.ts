/**
 * Chat on the reference Qwen GGUFs of ../shared (rand-qwen2 / rand-qwen3: byte-level BPE with <|im_start|> 1098 and
 * <|im_end|> 1099 as control tokens, EOS = <|im_end|>, no BOS; their files carry no tokenizer.chat_template, so the
 * built-in ChatML is passed): the prompt's special tokens are single ids, <|im_end|> ends generation, the second
 * turn evaluates only its new tokens, and the same prompt ids from a fresh cache give the chat's reply.
 */
import * as path from 'path';
import { ChatTemplate, loadModel } from '../../lib';
import { describeShared } from '../helpers';

describeShared('chat on the reference Qwen GGUFs', (shared) => {
  for (const name of ['rand-qwen2-f32', 'rand-qwen3-q8_0']) {
    test(`${name}: ChatML turns, special tokens, reuse`, async () => {
      const model = await loadModel(path.join(shared, 'reference', 'models', `${name}.gguf`), { threads: 1 });
      try {
        expect(model.info).toMatchObject({ eosToken: '<|im_end|>', addBos: false });
        expect(model.info.chatTemplate).toBeUndefined();
        await expect(model.createChatSession()).rejects.toMatchObject({ code: 'NO_CHAT_TEMPLATE' });
        const chat = await model.createChatSession({ template: 'chatml', systemPrompt: 'Tell a story.', contextSize: 256 });
        try {
          const r1 = await chat.send('Tom', { temperature: 0, maxTokens: 8 });
          const ids1 = await model.tokenize(ChatTemplate.fromModel(model, 'chatml').render(chat.history.slice(0, 2)), { parseSpecial: true });
          expect(ids1.filter((t) => t === 1098).length).toBe(3);
          expect(ids1.filter((t) => t === 1099).length).toBe(2);
          expect(r1.promptTokens).toBe(ids1.length);
          expect(r1.tokens).not.toContain(1099); // <|im_end|> would have ended the reply
          const r2 = await chat.send('No', { temperature: 0, maxTokens: 8 });
          const rest = await model.tokenize('<|im_end|>\n<|im_start|>user\nNo<|im_end|>\n<|im_start|>assistant\n', { addSpecial: false, parseSpecial: true });
          expect(r2.promptTokens - r2.reusedPromptTokens).toBe(rest.length + (r1.stopReason === 'eos' ? 0 : 1));
          const s = await model.createSession({ contextSize: 256 });
          // Turn 2's prompt is turn 1's ids, the reply's ids as generated (random weights rarely generate the ids that
          // tokenizing their text gives), then the new text's: the same ids from a fresh cache give the same reply.
          const alone = await s.generate([...ids1, ...r1.tokens, ...rest], { temperature: 0, maxTokens: 8 });
          await s.dispose();
          expect(alone.tokens).toEqual(r2.tokens);
        } finally {
          await chat.dispose();
        }
      } finally {
        await model.dispose();
      }
    });
  }
});
