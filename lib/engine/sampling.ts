/**
 * Token sampling, in llama.cpp's default order: repetition penalties, then top-k, then top-p (nucleus, on the
 * untempered distribution), then temperature, then a draw from a seeded generator. Temperature 0 is greedy
 * argmax (lowest id wins ties, as llama.cpp's greedy sampler) of the penalized logits.
 */
import { OptionError } from '../errors';
import { checkSeed } from './options';

export interface SamplingOptions {
  /** 0 = greedy. Default 0.8. */
  temperature?: number;
  /** Keep the k most likely tokens; 0 = all. Default 40. */
  topK?: number;
  /** Keep the smallest set whose probability reaches p; 1 = all. Default 0.95. */
  topP?: number;
  /** Seed of the random generator; default: random. */
  seed?: number;
  /**
   * llama.cpp's repeat penalty: the logit of a token among the last `repeatLastN` is divided by it (multiplied
   * when <= 0). Default 1 (off).
   */
  repeatPenalty?: number;
  /** Tokens (prompt and generated, newest last) the penalties look at: 0 = none, -1 = all. Default 64. */
  repeatLastN?: number;
  /** Subtracted once from the logit of every token among the last `repeatLastN`. Default 0 (off). */
  presencePenalty?: number;
  /** Subtracted from a token's logit once per occurrence among the last `repeatLastN`. Default 0 (off). */
  frequencyPenalty?: number;
}

export interface ResolvedSampling {
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
  /** Repetition penalties; undefined when they change nothing (llama.cpp skips them then too). */
  penalties?: ResolvedPenalties;
}

export interface ResolvedPenalties {
  repeatPenalty: number;
  /** Window length; Infinity for -1 (every token seen). */
  lastN: number;
  presencePenalty: number;
  frequencyPenalty: number;
}

/** The penalties of `o`, checked; undefined when they are off (window 0, or every penalty neutral). */
function resolvePenalties(o: SamplingOptions): ResolvedPenalties | undefined {
  const repeatPenalty = o.repeatPenalty ?? 1;
  const repeatLastN = o.repeatLastN ?? 64;
  const presencePenalty = o.presencePenalty ?? 0;
  const frequencyPenalty = o.frequencyPenalty ?? 0;
  if (typeof repeatPenalty !== 'number' || !(repeatPenalty > 0) || !Number.isFinite(repeatPenalty))
    throw new OptionError('repeatPenalty', `must be a finite number > 0 (1 = off), got ${String(o.repeatPenalty)}`);
  if (!Number.isInteger(repeatLastN) || repeatLastN < -1)
    throw new OptionError('repeatLastN', `must be an integer >= -1 (0 = off, -1 = every token), got ${String(o.repeatLastN)}`);
  for (const [name, v] of [['presencePenalty', presencePenalty], ['frequencyPenalty', frequencyPenalty]] as const)
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new OptionError(name, `must be a finite number (0 = off), got ${String(v)}`);
  if (repeatLastN === 0 || (repeatPenalty === 1 && presencePenalty === 0 && frequencyPenalty === 0)) return undefined;
  return { repeatPenalty, lastN: repeatLastN === -1 ? Infinity : repeatLastN, presencePenalty, frequencyPenalty };
}

export function resolveSampling(o: SamplingOptions = {}): ResolvedSampling {
  const temperature = o.temperature ?? 0.8;
  const topK = o.topK ?? 40;
  const topP = o.topP ?? 0.95;
  if (typeof temperature !== 'number' || !(temperature >= 0) || !Number.isFinite(temperature))
    throw new OptionError('temperature', `must be a finite number >= 0, got ${String(o.temperature)}`);
  if (!Number.isInteger(topK) || topK < 0) throw new OptionError('topK', `must be an integer >= 0, got ${String(o.topK)}`);
  if (typeof topP !== 'number' || !(topP > 0 && topP <= 1))
    throw new OptionError('topP', `must be a number in (0, 1], got ${String(o.topP)}`);
  const seed = o.seed === undefined ? Math.floor(Math.random() * 0x100000000) : checkSeed(o.seed);
  const penalties = resolvePenalties(o);
  return { temperature, topK, topP, seed, ...(penalties && { penalties }) };
}

/**
 * llama.cpp's penalties sampler (llama_sampler_penalties): the count of each token among the last `lastN` tokens
 * accepted (the prompt's, then each generated one), and the logit adjustment it makes, in float32 arithmetic as
 * llama.cpp's: for a token seen `count` > 0 times, logit := logit <= 0 ? logit * repeat : logit / repeat, then
 * logit -= count * frequency + presence.
 */
export class Penalties {
  private readonly window: number[] = [];
  private head = 0;
  private readonly counts = new Map<number, number>();
  private scratch = new Float32Array(0);

  constructor(readonly options: ResolvedPenalties) {}

  /** Adds a token to the window (the oldest leaves it once it holds lastN). */
  accept(token: number): void {
    const { lastN } = this.options;
    if (this.window.length < lastN) this.window.push(token);
    else {
      const old = this.window[this.head];
      const c = this.counts.get(old)! - 1;
      if (c === 0) this.counts.delete(old);
      else this.counts.set(old, c);
      this.window[this.head] = token;
      this.head = (this.head + 1) % lastN;
    }
    this.counts.set(token, (this.counts.get(token) ?? 0) + 1);
  }

  /** How often `token` is in the window. */
  count(token: number): number {
    return this.counts.get(token) ?? 0;
  }

  /** `logits` with the penalties applied, in a buffer of this object's (the input is left as it is). */
  apply(logits: Float32Array): Float32Array {
    if (this.scratch.length !== logits.length) this.scratch = new Float32Array(logits.length);
    const out = this.scratch;
    out.set(logits);
    const { repeatPenalty, presencePenalty, frequencyPenalty } = this.options;
    const f = Math.fround;
    for (const [token, count] of this.counts) {
      if (token < 0 || token >= out.length) continue;
      const logit = out[token];
      const repeated = logit <= 0 ? f(logit * f(repeatPenalty)) : f(logit / f(repeatPenalty));
      out[token] = f(repeated - f(f(f(count) * f(frequencyPenalty)) + f(presencePenalty)));
    }
    return out;
  }
}

/** Index of the largest value; the lowest index wins ties. */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  let bestValue = logits[0];
  for (let i = 1; i < logits.length; i++) {
    if (logits[i] > bestValue) {
      bestValue = logits[i];
      best = i;
    }
  }
  return best;
}

/** xoshiro128** : small, fast, and the same sequence on every platform for a given seed. */
export class Rng {
  private s = new Uint32Array(4);
  constructor(seed: number) {
    // splitmix32 spreads the seed over the state (an all-zero state would be stuck)
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }
  /** Uniform in [0, 1). */
  next(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result / 0x100000000;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** The first sorted prefix sampleUnbounded() takes (the vocabulary is sorted whole only when it is small). */
const UNBOUNDED_FIRST_PREFIX = 64;
const UNBOUNDED_SECOND_PREFIX = 512;

/** A sampler with its own generator state; one per generation. */
export class Sampler {
  private readonly rng: Rng;
  private ids: Int32Array = new Int32Array(0);
  private probs: Float64Array = new Float64Array(0);
  /** The repetition penalties' window; undefined when they are off. */
  readonly penalties: Penalties | undefined;

  constructor(readonly options: ResolvedSampling) {
    this.rng = new Rng(options.seed);
    this.penalties = options.penalties && new Penalties(options.penalties);
  }

  /**
   * Records a token of the sequence for the repetition penalties: the prompt's tokens, then each generated token
   * once it is chosen (as llama.cpp's server accepts them). A no-op without penalties.
   */
  accept(token: number): void {
    this.penalties?.accept(token);
  }

  sample(rawLogits: Float32Array): number {
    const logits = this.penalties ? this.penalties.apply(rawLogits) : rawLogits;
    if (this.options.temperature === 0) return argmax(logits);
    if (this.options.topK === 0 && logits.length > 4 * UNBOUNDED_FIRST_PREFIX) return this.sampleUnbounded(logits);
    const { keep, total } = this.weigh(logits);
    const ids = this.ids;
    const p = this.probs;
    let r = this.rng.next() * total;
    for (let i = 0; i < keep; i++) {
      r -= p[i];
      if (r < 0) return ids[i];
    }
    return ids[keep - 1];
  }

  /**
   * The probability sample(logits) draws each token with (top-k, top-p, temperature; one-hot at the argmax at
   * temperature 0), into out[0..logits.length) — what speculative sampling compares (lib/engine/speculative.ts).
   */
  distribution(logits: Float32Array, out: Float64Array): void {
    // Speculative sampling compares whole distributions of drafts whose penalty windows would differ.
    if (this.penalties) throw new OptionError('speculative', 'repetition penalties are not supported with speculative decoding');
    out.fill(0, 0, logits.length);
    if (this.options.temperature === 0) {
      out[argmax(logits)] = 1;
      return;
    }
    const { keep, total } = this.weigh(logits);
    for (let i = 0; i < keep; i++) out[this.ids[i]] = this.probs[i] / total;
  }

  /** Uniform in [0, 1) from this sampler's generator. */
  uniform(): number {
    return this.rng.next();
  }

  /** An index drawn with probability weights[i] / Σ weights (weights >= 0 over [0, n), Σ > 0). */
  draw(weights: Float64Array, n: number): number {
    let total = 0;
    for (let i = 0; i < n; i++) total += weights[i];
    let r = this.rng.next() * total;
    let last = 0;
    for (let i = 0; i < n; i++) {
      if (weights[i] <= 0) continue;
      last = i;
      r -= weights[i];
      if (r < 0) return i;
    }
    return last;
  }

  /**
   * The kept candidates (this.ids[0..keep), best first) and their tempered weights (this.probs), whose sum is
   * `total`: top-k, then top-p on the untempered distribution, then temperature. Temperature > 0.
   */
  private weigh(logits: Float32Array): { keep: number; total: number } {
    const { temperature, topK, topP } = this.options;
    const n = logits.length;
    const k = this.candidates(logits, topK > 0 ? Math.min(topK, n) : n);
    // candidates are sorted by logit, best first; softmax at temperature 1 for top-p
    const ids = this.ids;
    const p = this.probs;
    const max = logits[ids[0]];
    let sum = 0;
    for (let i = 0; i < k; i++) sum += (p[i] = Math.exp(logits[ids[i]] - max));
    let keep = k;
    if (topP < 1) {
      let cum = 0;
      for (let i = 0; i < k; i++) {
        cum += p[i] / sum;
        if (cum >= topP) {
          keep = i + 1;
          break;
        }
      }
    }
    // temperature
    let total = 0;
    for (let i = 0; i < keep; i++) total += (p[i] = Math.exp((logits[ids[i]] - max) / temperature));
    return { keep, total };
  }

  /**
   * topK 0 (every token a candidate) without sorting the vocabulary: the same walk as sample() — top-p over the
   * candidates best first, then the draw best first — over a sorted prefix of the candidates (64, then 512, then
   * all) that grows only when the walk needs more of it: a model's distribution rarely needs more than the first. The sums over the whole vocabulary are taken in id order instead of best
   * first, so a draw differs from a full sort's only when it falls within rounding of a boundary.
   */
  private sampleUnbounded(logits: Float32Array): number {
    const { temperature, topP } = this.options;
    const n = logits.length;
    const max = logits[argmax(logits)];
    // top-p needs the softmax's sum at temperature 1; without top-p the draw needs the tempered total.
    let sum = 0;
    let total = 0;
    if (topP < 1) for (let i = 0; i < n; i++) sum += Math.exp(logits[i] - max);
    else for (let i = 0; i < n; i++) total += Math.exp((logits[i] - max) / temperature);
    let m = this.candidates(logits, UNBOUNDED_FIRST_PREFIX);
    // One larger prefix by insertion (cheap while short), then the whole vocabulary sorted.
    const grow = () => (m = this.candidates(logits, m < UNBOUNDED_SECOND_PREFIX ? UNBOUNDED_SECOND_PREFIX : n));
    const ids = this.ids;
    // top-p: the smallest best-first prefix whose probability reaches topP
    let keep = n;
    if (topP < 1) {
      let cum = 0;
      for (let i = 0; i < n; i++) {
        if (i === m) grow();
        cum += Math.exp(logits[ids[i]] - max) / sum;
        if (cum >= topP) {
          keep = i + 1;
          break;
        }
      }
      total = 0;
      for (let i = 0; i < keep; i++) total += Math.exp((logits[ids[i]] - max) / temperature);
    }
    let r = this.rng.next() * total;
    for (let i = 0; i < keep; i++) {
      if (i === m) grow();
      r -= Math.exp((logits[ids[i]] - max) / temperature);
      if (r < 0) return ids[i];
    }
    if (keep > m) grow();
    return ids[keep - 1];
  }

  /** Puts the k best ids, sorted by logit descending (ties: lower id first), in this.ids; returns k. */
  private candidates(logits: Float32Array, k: number): number {
    if (this.ids.length < logits.length) {
      this.ids = new Int32Array(logits.length);
      this.probs = new Float64Array(logits.length);
    }
    const ids = this.ids;
    const better = (a: number, b: number) => logits[a] > logits[b] || (logits[a] === logits[b] && a < b);
    if (k === logits.length) {
      const all = Array.from({ length: k }, (_, i) => i).sort((a, b) => (better(a, b) ? -1 : better(b, a) ? 1 : 0));
      ids.set(all);
      return k;
    }
    // insertion into a sorted list of k: linear in the vocabulary for the small k used in practice
    let filled = 0;
    for (let i = 0; i < logits.length; i++) {
      if (filled === k && !better(i, ids[k - 1])) continue;
      let j = filled < k ? filled++ : k - 1;
      while (j > 0 && better(i, ids[j - 1])) {
        ids[j] = ids[j - 1];
        j--;
      }
      ids[j] = i;
    }
    return k;
  }
}
