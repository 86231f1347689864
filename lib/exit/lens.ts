/**
 * The logit lens between two layers: final norm + LM head on the hidden state of one row, read as cheap
 * features (p1, p2, gap = p1 - p2, entropy) and the top-1 token.
 *
 * Two modes:
 *  - faithful: softmax over the whole vocabulary, as in the paper (one full head per check);
 *  - fast: softmax over a candidate set only — the label tokens of a classification task, or the top-k of
 *    the first check of the token — so a check costs a few rows of the head instead of all of them.
 * Features of the two modes are not interchangeable: a classifier is trained and used in one mode.
 */
import { AdaInferError, OptionError } from '../errors';
import { TransformerContext } from '../model/transformer';
import { ATTENTION_FEATURES, FeatureName, HIDDEN_FEATURES, RESIDUAL_FEATURES } from './classifier';
import type { ExitProbe } from './probe';
import { DEFAULT_FAST_TOP_K } from '../defaults';

export type LensMode = 'faithful' | 'fast';

/**
 * Where a fast lens's candidates come from is part of what a classifier was trained on: a fixed set
 * (`candidates`, e.g. a task's label tokens) or the top-k of the first check (`topK`). An exit file records one of
 * the two; a lens with neither (an inline fast policy, no training) takes the label tokens in classification and
 * the default top-k otherwise. policy.ts: labelLens keeps a file's source when it classifies.
 */
export interface LensOptions {
  mode: LensMode;
  /** Fast mode: a fixed candidate set (e.g. label tokens). Without it, the top-k of the first check. */
  candidates?: number[];
  /** Fast mode without fixed candidates: how many of the first check's top tokens to keep (default 16). */
  topK?: number;
  /**
   * Fast mode with top-k candidates, in classification: the label tokens. Each read then reads them too, after
   * the features (a second candidates read over these few rows), so that lensLogits() holds their logits.
   */
  answerTokens?: number[];
}

/**
 * What one check read. Reused between checks: copy what must outlive the next read. The optional fields are read
 * only where the reader's features ask for them (LensReader; their meaning: classifier.ts, FEATURE_NAMES), else
 * NaN.
 */
export interface LensReading {
  top1: number;
  p1: number;
  p2: number;
  gap: number;
  entropy: number;
  /** Jensen–Shannon divergence from the previous check's distribution over the candidate set ('jsd'). */
  jsd?: number;
  /** The hidden state's change since the previous check ('hidden_cos', 'hidden_norm'). */
  hiddenCos?: number;
  hiddenNorm?: number;
  /** The decision row's attention in the layer just run ('attn_entropy', 'attn_self'). */
  attnEntropy?: number;
  attnSelf?: number;
  /**
   * The decision row's residual stream after the checked layer, nEmbd floats ('probe'): the reader's buffer,
   * overwritten by the next read (copy to keep).
   */
  hidden?: Float32Array;
}

/** What a reader reads beside the lens statistics, from the features of the policy it serves. */
export interface LensExtras {
  divergence: boolean;
  hidden: boolean;
  attention: boolean;
  /** The row's hidden state itself (LensReading.hidden): every backend can copy it out. */
  residual: boolean;
}

export const NO_EXTRAS: LensExtras = Object.freeze({ divergence: false, hidden: false, attention: false, residual: false });

export function extrasFor(features: readonly FeatureName[] | undefined): LensExtras {
  if (!features) return NO_EXTRAS;
  return {
    divergence: features.includes('jsd'),
    hidden: features.some((f) => HIDDEN_FEATURES.includes(f)),
    attention: features.some((f) => ATTENTION_FEATURES.includes(f)),
    residual: features.some((f) => RESIDUAL_FEATURES.includes(f)),
  };
}

/**
 * Jensen–Shannon divergence (nats) between the softmax of `a` and the softmax of `b` (logits of the same tokens,
 * [0, n)), in float64. `pa`, `pb`: scratch of n.
 */
export function jensenShannon(a: ArrayLike<number>, b: ArrayLike<number>, n: number, pa: Float64Array, pb: Float64Array): number {
  softmaxInto(a, n, pa);
  softmaxInto(b, n, pb);
  let js = 0;
  for (let i = 0; i < n; i++) {
    const m = 0.5 * (pa[i] + pb[i]);
    if (pa[i] > 0) js += 0.5 * pa[i] * Math.log(pa[i] / m);
    if (pb[i] > 0) js += 0.5 * pb[i] * Math.log(pb[i] / m);
  }
  return js;
}

function softmaxInto(logits: ArrayLike<number>, n: number, out: Float64Array): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < n; i++) sum += out[i] = Math.exp(logits[i] - max);
  for (let i = 0; i < n; i++) out[i] /= sum;
}

/**
 * The logit lens of one row at a time (one sequence's decision row). Fast mode keeps its candidate set here,
 * per reader: the native candidate buffer is shared by every row of a batch, so it is written before each
 * candidate read. A batch has one reader per slot; a single sequence has one.
 */
export class LensReader {
  /** The last read. Reused between reads: copy what must outlive the next one. */
  readonly reading: LensReading = { top1: -1, p1: 0, p2: 0, gap: 0, entropy: 0 };
  /** Fast mode: the candidates of the current token ([0, active)); the fixed set, if any, stays at the front. */
  private readonly candidates: Int32Array;
  private readonly fixed: number;
  private readonly topK: number;
  /** Fast top-k lens in classification: the label tokens read after each check (LensOptions.answerTokens). */
  private readonly answers: Int32Array | undefined;
  /** Candidates in use for this token (fast mode, and faithful mode with jsd), or 0 before its first read. */
  private active = 0;
  /** jsd: the candidates' logits at the previous and the current check of this token. */
  private readonly candidateLogits: [Float64Array, Float64Array];
  private readonly probs: [Float64Array, Float64Array];
  private checks = 0;
  /** 'probe': the decision row's hidden state of the last read. */
  private readonly hidden: Float32Array | undefined;

  /**
   * `extras`: what the reader reads beside the lens (extrasFor(the policy's features)). The hidden-state and
   * attention statistics need a backend that computes them: elsewhere, EXIT_FILE (a policy, from an exit file
   * or not, whose features cannot be computed here). Attention statistics are turned on for the whole context at
   * each begin() (a context-wide switch: whoever runs without them may turn it off, as evaluatePolicy's full-depth
   * runs do, so that they do not pay for them).
   */
  constructor(
    private readonly ctx: TransformerContext,
    readonly options: LensOptions,
    readonly extras: LensExtras = NO_EXTRAS,
  ) {
    const c = ctx.native;
    if ((extras.hidden || extras.attention) && !c.computesExitStatistics)
      throw new AdaInferError(
        'EXIT_FILE',
        `the exit policy's features need the ${extras.attention ? 'attention statistics' : 'hidden-state change'}, which the ${c.backend} backend does not compute`,
      );

    if (options.mode !== 'faithful' && options.mode !== 'fast')
      throw new OptionError('lens mode', `must be 'faithful' or 'fast', got ${String(options.mode)}`);
    this.topK = options.topK ?? DEFAULT_FAST_TOP_K;
    const fixed = options.mode === 'fast' ? options.candidates : undefined;
    if (fixed !== undefined) {
      if (fixed.length === 0 || fixed.length > c.lensCandidates.length)
        throw new OptionError('candidates', `must hold 1..${c.lensCandidates.length} token ids`);
      const nVocab = ctx.model.config.nVocab;
      for (const id of fixed)
        if (!Number.isInteger(id) || id < 0 || id >= nVocab) throw new OptionError('candidates', `token id ${id} is outside the vocabulary`);
    } else if (options.mode === 'fast' && (!Number.isInteger(this.topK) || this.topK < 2 || this.topK > c.lensIds.length)) {
      throw new OptionError('topK', `fast-mode top-k must be an integer in [2, ${c.lensIds.length}]`);
    }
    const answers = options.mode === 'fast' && fixed === undefined ? options.answerTokens : undefined;
    if (answers !== undefined) {
      if (answers.length === 0 || answers.length > c.lensCandidates.length)
        throw new OptionError('answerTokens', `must hold 1..${c.lensCandidates.length} token ids`);
      const nVocab = ctx.model.config.nVocab;
      for (const id of answers)
        if (!Number.isInteger(id) || id < 0 || id >= nVocab) throw new OptionError('answerTokens', `token id ${id} is outside the vocabulary`);
    }
    this.answers = answers === undefined ? undefined : Int32Array.from(answers);
    this.fixed = fixed?.length ?? 0;
    const nCandidates = options.mode === 'fast' ? Math.max(this.fixed, this.topK) : extras.divergence ? this.topK : 0;
    if (options.mode === 'faithful' && extras.divergence && (!Number.isInteger(this.topK) || this.topK < 2 || this.topK > c.lensIds.length))
      throw new OptionError('topK', `the jsd feature's top-k must be an integer in [2, ${c.lensIds.length}]`);
    this.candidates = new Int32Array(nCandidates);
    if (fixed) this.candidates.set(fixed);
    const scratch = () => new Float64Array(extras.divergence ? nCandidates : 0);
    this.hidden = extras.residual ? new Float32Array(ctx.model.config.nEmbd) : undefined;
    this.candidateLogits = [scratch(), scratch()];
    this.probs = [scratch(), scratch()];
  }

  /** Starts a new token: fast mode without fixed candidates picks its candidates at the next read. */
  begin(): void {
    this.active = this.fixed;
    this.checks = 0;
    if (this.extras.attention) this.ctx.native.setAttentionStatistics(true);
  }

  /** Reads the lens of batch row `row`; after it, ctx.lensLogits() holds that read's logits. */
  read(row: number): LensReading {
    const c = this.ctx.native;
    if (this.options.mode === 'faithful') {
      if (this.extras.divergence && this.active === 0) {
        // jsd in faithful mode: the token's candidate set is its first check's top-k.
        c.logitLens(row, this.topK);
        this.candidates.set(c.lensIds.subarray(0, this.topK));
        this.active = this.topK;
      } else c.logitLens(row, 1);
    } else {
      if (this.active === 0) {
        // First read of the token: the whole vocabulary once, to choose the candidates of every read.
        c.logitLens(row, this.topK);
        this.candidates.set(c.lensIds.subarray(0, this.topK));
        this.active = this.topK;
      }
      c.lensCandidates.set(this.candidates.subarray(0, this.active));
      c.logitLensCandidates(row, this.active, 1);
    }
    const r = this.reading;
    const f = c.lensFeatures;
    r.top1 = c.lensIds[0];
    r.p1 = f[0];
    r.p2 = f[1];
    r.gap = f[2];
    r.entropy = f[3];
    const first = this.checks === 0;
    this.checks++;
    if (this.extras.divergence) r.jsd = this.divergence(first);
    if (this.extras.hidden || this.extras.attention) {
      c.exitStatistics(row, first);
      const x = c.exitStats;
      if (this.extras.attention) {
        r.attnEntropy = x[0];
        r.attnSelf = x[1];
      }
      if (this.extras.hidden) {
        r.hiddenCos = x[2];
        r.hiddenNorm = x[3];
      }
    }
    if (this.hidden) {
      c.readHidden(row, 1, this.hidden);
      r.hidden = this.hidden;
    }
    if (this.answers) {
      c.lensCandidates.set(this.answers);
      c.logitLensCandidates(row, this.answers.length, 1);
    }
    return r;
  }

  /** jsd of the read just made: its candidates' logits against the previous check's (0 at the first). */
  private divergence(first: boolean): number {
    const logits = this.ctx.lensLogits();
    const n = this.active;
    const [prev, cur] = first ? this.candidateLogits : [this.candidateLogits[1], this.candidateLogits[0]];
    for (let i = 0; i < n; i++) cur[i] = logits[this.candidates[i]];
    // The buffer just written becomes the previous one of the next check.
    this.candidateLogits[0] = prev;
    this.candidateLogits[1] = cur;
    return first ? 0 : jensenShannon(prev, cur, n, this.probs[0], this.probs[1]);
  }
}

/**
 * The feature vectors of one token's checks, in layer order (classifier.ts lists the features). Features that
 * look back (streak, dp1) keep the previous check's reading here: begin() at each new token, then next() once
 * per check, in order — at run time (classifierPolicy) and over a trace (training) alike.
 */
export class FeatureExtractor {
  readonly out: Float64Array;
  private prevTop1 = -1;
  private prevP1 = 0;
  private streak = 0;

  /** `probe`: the hidden-state probe that computes 'probe' (ExitClassifier.probe), required when names hold it. */
  constructor(
    readonly names: readonly FeatureName[],
    private readonly probe?: ExitProbe,
  ) {
    if (names.includes('probe') && !probe) throw new OptionError('features', "the 'probe' feature needs its hidden-state probe (fitted with the classifier)");
    this.out = new Float64Array(names.length);
  }

  begin(): void {
    this.prevTop1 = -1;
    this.streak = 0;
  }

  /** The features of reading `r` after layer `layer` (0-based) of `nLayer`, in `out` (reused: copy to keep). */
  next(r: LensReading, layer: number, nLayer: number): Float64Array {
    const first = this.streak === 0;
    this.streak = !first && r.top1 === this.prevTop1 ? this.streak + 1 : 1;
    const out = this.out;
    const names = this.names;
    for (let i = 0; i < names.length; i++) {
      switch (names[i]) {
        case 'p1':
          out[i] = r.p1;
          break;
        case 'p2':
          out[i] = r.p2;
          break;
        case 'gap':
          out[i] = r.gap;
          break;
        case 'entropy':
          out[i] = r.entropy;
          break;
        case 'layer':
          out[i] = (layer + 1) / nLayer;
          break;
        case 'streak':
          out[i] = this.streak;
          break;
        case 'dp1':
          out[i] = first ? 0 : r.p1 - this.prevP1;
          break;
        case 'jsd':
          out[i] = r.jsd ?? NaN;
          break;
        case 'hidden_cos':
          out[i] = r.hiddenCos ?? NaN;
          break;
        case 'hidden_norm':
          out[i] = r.hiddenNorm ?? NaN;
          break;
        case 'attn_entropy':
          out[i] = r.attnEntropy ?? NaN;
          break;
        case 'attn_self':
          out[i] = r.attnSelf ?? NaN;
          break;
        case 'probe':
          if (!r.hidden) throw new AdaInferError('EXIT_FILE', "the 'probe' feature needs the row's hidden state, which this reading does not hold");
          out[i] = this.probe!.score(layer, r.hidden, r);
          break;
      }
    }
    this.prevTop1 = r.top1;
    this.prevP1 = r.p1;
    return out;
  }
}
