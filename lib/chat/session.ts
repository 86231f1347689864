/**
 * A conversation on one Session: the history of messages, rendered by the model's chat template (or the one
 * given) into each turn's prompt, and the KV cache of the previous turns reused.
 *
 * Reuse: the Session keeps the K/V of the last prompt and reply, and reuses the longest common prefix of token
 * ids. So that turn n+1's prompt starts with exactly the ids turn n left in the cache, the prompt is built from
 * them: when the new rendered text extends the previous rendered prompt plus the reply text, the new prompt is the
 * previous prompt's ids, the reply's ids as the model generated them, and the ids of the rest of the text (checked
 * to be what tokenizing the whole text ends with, so that the join is not split differently). Otherwise (a
 * template that rewrites earlier turns, a reply cut by a stop string) the whole text is tokenized again and the
 * Session reuses whatever prefix still matches. Only the new tokens are evaluated: `promptTokens -
 * reusedPromptTokens` in the result.
 */
import { AdaInferError, OptionError } from '../errors';
import { checkKnownOptions } from '../engine/options';
import type { GenerateOptions, GenerateResult, GenerationStream, Session } from '../api';
import type { TokenEvent } from '../engine/sequence';
import { ChatMessage, ChatTemplate } from './template';

/** Options of ChatSession.send / stream: those of Session.generate but the prompt's (the template makes it). */
export type ChatSendOptions = Omit<GenerateOptions, 'addBos' | 'parseSpecial'>;

/** What the ChatSession needs of the model: its tokenizer, through the worker. */
export interface ChatTokenizer {
  tokenize(text: string, options: { addSpecial?: boolean; parseSpecial?: boolean }): Promise<number[]>;
}

/** The previous turn: what the cache holds after it. */
interface Turn {
  /** The rendered prompt text and its ids. */
  rendered: string;
  promptIds: number[];
  /** The reply's text and ids; `exact`: the text is the ids' whole decoding (no stop string cut it). */
  replyText: string;
  replyIds: number[];
  exact: boolean;
}

export class ChatSession {
  private readonly messages: ChatMessage[] = [];
  private last: Turn | undefined;
  private busy = false;

  /** @internal use Model.createChatSession() */
  constructor(
    /** The session whose KV cache holds the conversation. */
    readonly session: Session,
    readonly template: ChatTemplate,
    private readonly tokenizer: ChatTokenizer,
    private readonly sendOptionNames: readonly string[],
    systemPrompt?: string,
  ) {
    if (systemPrompt !== undefined) this.messages.push({ role: 'system', content: systemPrompt });
  }

  /** The conversation so far (a copy): the system prompt, then each user message and reply. */
  get history(): ChatMessage[] {
    return this.messages.map((m) => ({ ...m }));
  }

  /**
   * Sends a user message and generates the reply (as Session.generate: text, tokens, stopReason, timings, exit
   * layers). The message and the reply join the history when the reply is complete; a call that fails or is
   * aborted leaves the history as it was.
   */
  async send(text: string, options: ChatSendOptions = {}): Promise<GenerateResult> {
    const prompt = await this.begin(text, options, 'send');
    try {
      const r = await this.session.generate(prompt.ids, options);
      this.record(text, prompt, r);
      return r;
    } finally {
      this.busy = false;
    }
  }

  /**
   * Sends a user message and streams the reply (as Session.stream); the iterator's last result (`done: true`)
   * is the reply's result. The message and reply join the history when the stream ends normally; leaving the loop
   * early stops the generation and leaves the history as it was.
   */
  stream(text: string, options: ChatSendOptions = {}): GenerationStream {
    return this.streamTurn(text, options);
  }

  private async *streamTurn(text: string, options: ChatSendOptions): AsyncGenerator<TokenEvent, GenerateResult | undefined> {
    const prompt = await this.begin(text, options, 'stream');
    try {
      const it = this.session.stream(prompt.ids, options);
      try {
        for (;;) {
          const step = await it.next();
          if (step.done) {
            if (step.value) this.record(text, prompt, step.value);
            return step.value;
          }
          yield step.value;
        }
      } finally {
        // Left early (break, a throw in the loop's body): stop the generation.
        await it.return?.();
      }
    } finally {
      this.busy = false;
    }
  }

  /** Checks the call, renders the history plus the new message, and builds the prompt's ids. */
  private async begin(text: string, options: ChatSendOptions, where: string): Promise<{ rendered: string; ids: number[] }> {
    if (typeof text !== 'string') throw new OptionError('text', 'must be a string');
    if (options === null || typeof options !== 'object') throw new OptionError('options', 'must be an object');
    checkKnownOptions(options, this.sendOptionNames, `ChatSession.${where}`);
    if (this.busy) throw new AdaInferError('BUSY', 'the chat is already answering; wait for the reply or abort it');
    this.busy = true;
    try {
      const rendered = this.template.render([...this.messages, { role: 'user', content: text }], { addGenerationPrompt: true });
      return { rendered, ids: await this.promptIds(rendered) };
    } catch (err) {
      this.busy = false;
      throw err;
    }
  }

  /** The ids of `rendered`, starting with the previous turn's ids where the text extends it (see the file comment). */
  private async promptIds(rendered: string): Promise<number[]> {
    const whole = () => this.tokenizer.tokenize(rendered, { addSpecial: true, parseSpecial: true });
    const last = this.last;
    if (!last || !last.exact) return whole();
    const before = last.rendered + last.replyText;
    if (!rendered.startsWith(before) || rendered.length === before.length) return whole();
    const [rest, all] = await Promise.all([this.tokenizer.tokenize(rendered.slice(before.length), { addSpecial: false, parseSpecial: true }), whole()]);
    // The rest must tokenize alone as it does at the end of the whole text: then the join splits nothing.
    if (rest.length === 0 || rest.length > all.length || rest.some((t, i) => all[all.length - rest.length + i] !== t)) return all;
    return [...last.promptIds, ...last.replyIds, ...rest];
  }

  private record(text: string, prompt: { rendered: string; ids: number[] }, r: GenerateResult): void {
    this.messages.push({ role: 'user', content: text }, { role: 'assistant', content: r.text });
    // A reply cut by a stop string, or ending in a split character (U+FFFD), is not the decoding of its ids.
    const exact = r.stopReason !== 'stop' && !r.text.endsWith('\uFFFD');
    this.last = { rendered: prompt.rendered, promptIds: prompt.ids, replyText: r.text, replyIds: r.tokens, exact };
  }

  /** Frees the session (its KV cache). */
  async dispose(): Promise<void> {
    await this.session.dispose();
  }
}
