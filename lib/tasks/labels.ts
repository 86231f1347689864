/**
 * From label words to the one token per label that is scored at the answer position.
 *
 * Tokenization pitfalls, and what is done about each:
 *  - The leading space. The label follows the cue with a space ("Sentiment: positive"), and SentencePiece
 *    ("▁positive") and byte-level BPE ("Ġpositive") both fold that space into the label's first token. So a
 *    label word is never tokenized on its own: its tokens are what the text `prompt + " " + word` adds after
 *    the tokens of `prompt` ("joined" boundary). If the prompt's tokens are not a prefix of the joined text's
 *    tokens (the boundary merged), that is an error.
 *  - Labels of several tokens ("▁p|o|s|it|i|ve" in a 512-token vocabulary) are scored by their first token;
 *    `multiToken` is set and the output says so.
 *  - Tokens shared by every label before they differ (a bare "▁" in a vocabulary without "▁World") belong to
 *    the prompt: they are appended to it and the labels are scored at the next position.
 *  - Two labels (not all) with the same first token cannot be told apart by one token. Disambiguation: the
 *    space is moved into the prompt ("Answer: " ending in a space token) and each label is scored by the first
 *    token of the word without a space ("space-in-prompt" boundary; the model then sees "▁|C" where text would
 *    have tokenized "▁C", which the output notes). If the first tokens still collide, it is an error that
 *    names the labels.
 */
import { AdaInferError } from '../errors';
import { createTokenizer, Tokenizer } from '../tokenizer';
import type { TransformerModel } from '../model/transformer';
import { tokenizerMetadataFromGGUF } from '../model/gguf_tokenizer';

export type LabelBoundary = 'joined' | 'space-in-prompt';

export interface LabelToken {
  word: string;
  /** The label's tokens after the prompt (and after the shared prefix). */
  tokens: number[];
  /** Their vocabulary strings, for the report. */
  pieces: string[];
  /** The scored token: tokens[0]. */
  scored: number;
  /** The label has more tokens than the scored one. */
  multiToken: boolean;
}

export interface LabelScheme {
  boundary: LabelBoundary;
  /** Text appended to every prompt before tokenizing (' ' for space-in-prompt). */
  promptSuffix: string;
  /** Tokens every label starts with, appended to every prompt's tokens. */
  sharedPrefix: number[];
  labels: LabelToken[];
  /** What was done, in words (multi-token labels, shared prefix, disambiguation). */
  notes: string[];
}

const show = (t: Tokenizer, ids: number[]) => ids.map((id) => t.tokenText(id)).join('|');

/**
 * The tokenizer without SentencePiece's space prefix (BPE: the same as the model's; a Hugging Face tokenizer
 * is used as it is).
 */
export function noSpaceTokenizer(model: TransformerModel): Tokenizer {
  if (model.tokenizer.model !== 'llama' || !model.gguf) return model.tokenizer;
  return createTokenizer({ ...tokenizerMetadataFromGGUF(model.gguf), addSpacePrefix: false });
}

function startsWith(a: number[], prefix: number[]): boolean {
  if (a.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (a[i] !== prefix[i]) return false;
  return true;
}

/** Moves the longest token prefix shared by all continuations (leaving each at least one token) out. */
function splitShared(conts: number[][]): { shared: number[]; rest: number[][] } {
  let k = 0;
  for (;;) {
    const t = conts[0][k];
    if (conts.some((c) => c.length <= k + 1 || c[k] !== t)) break;
    k++;
  }
  return { shared: conts[0].slice(0, k), rest: conts.map((c) => c.slice(k)) };
}

/** Groups of labels with the same first token, in words ('C', 'D' and 'E' all start with "▁"). */
function collisions(t: Tokenizer, words: string[], rest: number[][]): string[] {
  const byToken = new Map<number, string[]>();
  rest.forEach((r, i) => byToken.set(r[0], [...(byToken.get(r[0]) ?? []), `'${words[i]}'`]));
  return [...byToken]
    .filter(([, ws]) => ws.length > 1)
    .map(([id, ws]) => `${ws.slice(0, -1).join(', ')} and ${ws[ws.length - 1]} ${ws.length > 2 ? 'all' : 'both'} start with ${JSON.stringify(t.tokenText(id))}`);
}

function scheme(t: Tokenizer, words: string[], boundary: LabelBoundary, conts: number[][], notes: string[]): LabelScheme | string[] {
  const { shared, rest } = splitShared(conts);
  const clash = collisions(t, words, rest);
  if (clash.length > 0) return clash;
  const labels = rest.map((tokens, i) => ({
    word: words[i],
    tokens,
    pieces: tokens.map((id) => t.tokenText(id)),
    scored: tokens[0],
    multiToken: tokens.length > 1,
  }));
  if (shared.length > 0) notes.push(`every label starts with ${JSON.stringify(show(t, shared))}: appended to the prompt, labels scored at the next position`);
  const bare = labels.filter((l) => t.decode([l.scored]).trim() === '' && l.multiToken);
  if (bare.length > 0)
    notes.push(
      `${bare.map((l) => `'${l.word}'`).join(', ')} ${bare.length > 1 ? 'are' : 'is'} scored by a bare space token ${JSON.stringify(bare[0].pieces[0])}, ` +
        `which stands for every word the vocabulary cannot start with a merged space: a weak proxy`,
    );
  const multi = labels.filter((l) => l.multiToken);
  if (multi.length > 0)
    notes.push(
      `scored by their first token: ${multi.map((l) => `'${l.word}' = ${l.pieces.join('|')} → ${JSON.stringify(l.pieces[0])}`).join(', ')}`,
    );
  return { boundary, promptSuffix: boundary === 'joined' ? '' : ' ', sharedPrefix: shared, labels, notes };
}

/**
 * Resolves the scored tokens of `words` after `probe`, a prompt of the task (its end, the answer cue, is what
 * matters). `noSpace` encodes a word without the SentencePiece space prefix (for BPE, the tokenizer itself).
 */
export function resolveLabels(tokenizer: Tokenizer, noSpace: Tokenizer, probe: string, words: string[], task = 'task'): LabelScheme {
  if (words.length < 2) throw new AdaInferError('INVALID_OPTION', `${task}: needs at least two labels`);
  if (new Set(words).size !== words.length) throw new AdaInferError('INVALID_OPTION', `${task}: two labels are the same word`);
  const prompt = tokenizer.encode(probe);
  const conts = words.map((w) => {
    const full = tokenizer.encode(`${probe} ${w}`);
    if (!startsWith(full, prompt) || full.length === prompt.length)
      throw new AdaInferError(
        'TOKENIZER',
        `${task}: the prompt's tokens change when ' ${w}' follows it (…${show(tokenizer, prompt.slice(-3))} vs …${show(tokenizer, full.slice(prompt.length - 3))}); the answer cue must end where a token ends`,
      );
    return full.slice(prompt.length);
  });
  const joined = scheme(tokenizer, words, 'joined', conts, []);
  if (!Array.isArray(joined)) return joined;

  const spaced = words.map((w) => noSpace.encode(w, { addSpecial: false }));
  const suffix = tokenizer.encode(`${probe} `).slice(prompt.length);
  const notes = [
    `with the leading space, ${joined.join('; ')}: disambiguated by moving the space into the prompt (it ends with ${JSON.stringify(show(tokenizer, suffix))}) ` +
      `and scoring each label by its first token without the space`,
  ];
  const moved = scheme(tokenizer, words, 'space-in-prompt', spaced, notes);
  if (!Array.isArray(moved)) return moved;
  throw new AdaInferError(
    'TOKENIZER',
    `${task}: labels cannot be told apart by one token: with the leading space ${joined.join('; ')}; without it ${moved.join('; ')}. Choose other label words in lib/tasks/formats.ts`,
  );
}

/**
 * The tokens `label` adds after a prompt, its text written verbatim after the prompt's (Session.classify, where
 * the caller chose the boundary): the joined text's tokens after the prompt's when the prompt's tokens are a
 * prefix of them ('joined'), else — the tokenizer merged the end of the prompt with the start of the label
 * ("Answer: " + "yes": "▁" then "▁yes") — the label's own tokens without a space prefix, which is what follows
 * the prompt's tokens as the model runs them (the space-in-prompt boundary of resolveLabels).
 */
export function labelTokensAfter(
  tokenizer: Tokenizer,
  noSpace: Tokenizer,
  promptText: string,
  promptIds: number[],
  label: string,
  addSpecial: boolean,
): { tokens: number[]; boundary: LabelBoundary } {
  const full = tokenizer.encode(promptText + label, { addSpecial });
  if (startsWith(full, promptIds) && full.length > promptIds.length) return { tokens: full.slice(promptIds.length), boundary: 'joined' };
  return { tokens: noSpace.encode(label, { addSpecial: false }), boundary: 'space-in-prompt' };
}

/** The tokens of a prompt under a label scheme: the text (BOS included as the tokenizer adds it), then the shared prefix. */
export function promptTokens(tokenizer: Tokenizer, s: LabelScheme, text: string): number[] {
  const ids = tokenizer.encode(text + s.promptSuffix);
  for (const t of s.sharedPrefix) ids.push(t);
  return ids;
}

/**
 * True when the label `word`, written after `text` as in a demonstration, tokenizes so that its scored token
 * follows the prompt's tokens (joined boundary); always true for space-in-prompt, which defines the split.
 */
export function labelFollows(tokenizer: Tokenizer, s: LabelScheme, text: string, promptIds: number[], label: number): boolean {
  if (s.boundary !== 'joined') return true;
  const full = tokenizer.encode(`${text} ${s.labels[label].word}`);
  return startsWith(full, promptIds) && full[promptIds.length] === s.labels[label].scored;
}
