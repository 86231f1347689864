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
import { OptionError } from '../errors';
import { TransformerContext } from '../model/transformer';
import { FeatureName } from './classifier';
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

/** What one check read. Reused between checks: copy what must outlive the next read. */
export interface LensReading {
  top1: number;
  p1: number;
  p2: number;
  gap: number;
  entropy: number;
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
  /** Candidates in use for this token (fast mode), or 0 before its first read. */
  private active = 0;

  constructor(
    private readonly ctx: TransformerContext,
    readonly options: LensOptions,
  ) {
    const c = ctx.native;
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
    this.candidates = new Int32Array(options.mode === 'fast' ? Math.max(this.fixed, this.topK) : 0);
    if (fixed) this.candidates.set(fixed);
  }

  /** Starts a new token: fast mode without fixed candidates picks its candidates at the next read. */
  begin(): void {
    this.active = this.fixed;
  }

  /** Reads the lens of batch row `row`; after it, ctx.lensLogits() holds that read's logits. */
  read(row: number): LensReading {
    const c = this.ctx.native;
    if (this.options.mode === 'faithful') {
      c.logitLens(row, 1);
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
    if (this.answers) {
      c.lensCandidates.set(this.answers);
      c.logitLensCandidates(row, this.answers.length, 1);
    }
    return r;
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

  constructor(readonly names: readonly FeatureName[]) {
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
      }
    }
    this.prevTop1 = r.top1;
    this.prevP1 = r.p1;
    return out;
  }
}
