/**
 * Self-speculative decoding of one sequence — alone (lib/engine/sequence.ts) or as one request of a batch
 * (lib/engine/batch.ts: each request's rounds advance one step at a time with the other rows of the batch): tokens
 * drafted by the first layers
 * (a fixed depth, or an exit policy deciding per token), verified in one step by the whole model, the drafted
 * positions rejoining that step at their draft depth (kvFill 'recompute': every layer of an accepted position is
 * computed once). Greedy: a draft is kept while it equals the verifier's argmax. Sampling: speculative sampling
 * (Leviathan et al. 2023, Chen et al. 2023) — draft x ~ q, kept with probability min(1, p(x)/q(x)), else the
 * token is drawn from the residual max(0, p − q) normalised; after k kept drafts the next token is drawn from p —
 * so every emitted token has the full model's sampling distribution p (top-k / top-p / temperature applied to
 * both p and q).
 */
import { AdaInferError, OptionError } from '../errors';
import { ExitDecider } from '../exit/decider';
import { ExitPolicy, fixedDepthPolicy } from '../exit/policy';
import { TransformerContext } from '../model/transformer';
import { checkSpeculative } from './options';
import { argmax, Sampler } from './sampling';
import { RowGroup, RowOutput, StepEngine } from './step';

/**
 * Self-speculative decoding: tokens drafted by the first layers, up to `maxDraft` at a time, verified together by
 * the whole model in one step. Greedy: the output is the verifier's greedy output; sampling: speculative sampling,
 * so every token has the full model's sampling distribution.
 */
export interface SpeculativeOptions {
  /** The drafter: a fixed depth (1 <= layer < nLayer), or an exit policy deciding each drafted token's depth. */
  draft: { layer: number } | ExitPolicy;
  /** Drafted tokens per verification step (default 4). */
  maxDraft?: number;
  /** Adaptive drafting (default on): stop a round at an unsure draft; decode plainly while speculation is slower. */
  adaptive?: boolean | { minP1?: number; fallbackTokens?: number };
}

/** Speculative options checked against a context: what `Speculation` is built from. */
export interface CheckedSpeculation {
  policy: ExitPolicy;
  /** The fixed draft depth; 0 when an exit policy decides per token. */
  layer: number;
  maxDraft: number;
  adaptive: AdaptiveDrafting | undefined;
}

/**
 * Checks speculative options for a generation on `context` with `sampling`: the context's batch must hold a
 * verification step's 1 + maxDraft rows for each of the `sequences` sequences that may verify in one step.
 */
export function checkSpeculation(
  spec: SpeculativeOptions,
  context: TransformerContext,
  sampling: { temperature: number; penalties?: unknown },
  withExit: boolean,
  sequences = 1,
): CheckedSpeculation {
  const { maxDraft, adaptive } = checkSpeculative(spec, context.model.config.nLayer, withExit);
  if (sampling.penalties) throw new OptionError('speculative', 'repetition penalties are not supported with speculative decoding');
  const most = Math.floor(context.batchSize / sequences) - 1;
  if (maxDraft > most)
    throw new OptionError(
      'speculative',
      `maxDraft must be an integer in [1, ${most}] (a verification step's rows: ${context.batchSize} rows for ${sequences} sequence${sequences === 1 ? '' : 's'}), got ${String(maxDraft)}`,
    );
  const layer = 'layer' in spec.draft ? spec.draft.layer : 0;
  const policy = 'layer' in spec.draft ? fixedDepthPolicy(layer) : spec.draft;
  if (policy.lens.mode === 'fast' && sampling.temperature > 0)
    throw new OptionError('speculative', "sampling needs the drafter's whole distribution: a draft policy with a faithful lens");
  return { policy, layer, maxDraft, adaptive };
}

export interface SpeculativeStats {
  /** The draft depth of a fixed-depth drafter; 0 when an exit policy decides per token. */
  layer: number;
  /** Tokens drafted, and of them accepted by the full model. */
  drafted: number;
  accepted: number;
  acceptanceRate: number;
  /** Verification steps, and the mean drafted tokens each checked. */
  verifySteps: number;
  meanDraftLength: number;
  /** Layers computed per generated token (row-layers of drafts and verifications over the tokens they gave). */
  layersPerToken: number;
  /** Tokens given by plain decoding steps while adaptive drafting had fallen back. */
  fallbackTokens: number;
  /** Measured mean cost of one draft step and of one verification step, in ms. */
  draftStepMs: number;
  verifyStepMs: number;
}

/** Adaptive drafting: how a round's length and the fallback to plain decoding are decided. */
export interface AdaptiveDrafting {
  /** A round stops drafting after a draft whose exit-layer top-1 probability is below this. */
  minP1: number;
  /**
   * When the measured time per token of speculation exceeds plain decoding's, decode plainly for this many tokens
   * (per sequence sharing the drafter's DraftingMeter), doubling while rounds keep losing; 0: never fall back.
   */
  fallbackTokens: number;
}

/**
 * What adaptive drafting has measured for one way of drafting (drafter, maxDraft, adaptive options, greedy or
 * sampled) on one context: the time per token of plain decoding and of speculative rounds (exponential means), and
 * whether speculation was last found slower. Shared by every sequence on the context that drafts that way — the
 * requests of a batch (OpenBatch), the generations of a session (its Sequence) — so that a new sequence neither
 * measures plain decoding again nor probes a speculation the others just found slower. In a batch that matters: a draft step costs
 * a whole step while other rows run at full depth, so there speculation mostly loses, and each of 16 sequences
 * probing for itself made batches 10-20% slower than plain decoding.
 *
 * States, by what `shouldDecodePlainly` answers:
 *  - measuring: plain until PROBE plain steps have been timed;
 *  - speculating: every sequence starts rounds (no verdict yet, or the last one was a win);
 *  - falling back, after a round measured slower per token than plain decoding: plain for fallbackTokens × backoff
 *    plain tokens per sharing sequence (counted over all of them), the backoff doubling while rounds keep losing (up
 *    to MAX_BACKOFF) and reset by a win;
 *  - probing, when the window is used up: one sequence (the first to ask) runs a round, the others decode plainly
 *    until its result gives the next verdict (or it stops drafting: `release`).
 * A round that began before the last verdict reports nothing (in a batch, rounds of many sequences run at once;
 * only one verdict is drawn from them).
 */
export class DraftingMeter {
  /** Plain steps timed before the first round. */
  static readonly PROBE = 4;
  static readonly MAX_BACKOFF = 16;
  private plainSteps = 0;
  private plainMsPerToken = 0;
  private specMsPerToken = 0;
  /** The last verdict: speculation measured slower than plain decoding. */
  private losing = false;
  /** Plain tokens left in the fallback window (all sharers together). */
  private window = 0;
  private backoff = 1;
  /** Verdicts so far: a round remembers the count it began under, and reports only if it is still current. */
  private verdicts = 0;
  private prober: object | undefined;
  /** Sequences drafting through this meter now (`attach` / `release`). */
  private sharers = 0;

  constructor(readonly adaptive: AdaptiveDrafting) {}

  attach(): void {
    this.sharers++;
  }

  /** Some sequence drafts through it now. */
  get inUse(): boolean {
    return this.sharers > 0;
  }

  /** `who` stops drafting (its generation ended, or it left the batch): a probe it held passes to the next to ask. */
  release(who: object): void {
    this.sharers = Math.max(0, this.sharers - 1);
    if (this.prober === who) this.prober = undefined;
  }

  /** Whether `who` decodes its next token plainly; else it begins a round (under verdict `currentVerdict`). */
  shouldDecodePlainly(who: object): boolean {
    if (this.plainSteps < DraftingMeter.PROBE) return true;
    if (!this.losing || this.adaptive.fallbackTokens === 0) return false;
    if (this.window > 0) {
      this.window--;
      return true;
    }
    if (this.prober !== undefined && this.prober !== who) return true;
    this.prober = who;
    return false;
  }

  get currentVerdict(): number {
    return this.verdicts;
  }

  /** A plain decoding step of `ms` (one token of one sequence). */
  plainStep(ms: number): void {
    this.plainMsPerToken = this.plainSteps === 0 ? ms : 0.8 * this.plainMsPerToken + 0.2 * ms;
    this.plainSteps++;
  }

  /** A round of `who`, begun under verdict `verdict`, gave its tokens at `msPerToken`. */
  roundDone(who: object, verdict: number, msPerToken: number): void {
    if (this.prober === who) this.prober = undefined;
    if (verdict !== this.verdicts) return;
    this.specMsPerToken = this.specMsPerToken === 0 ? msPerToken : 0.8 * this.specMsPerToken + 0.2 * msPerToken;
    const loses = this.specMsPerToken > this.plainMsPerToken;
    if (loses) {
      this.window = this.adaptive.fallbackTokens * this.backoff * Math.max(1, this.sharers);
      this.backoff = Math.min(2 * this.backoff, DraftingMeter.MAX_BACKOFF);
      this.specMsPerToken = 0; // the next probe is measured afresh
    } else {
      this.backoff = 1;
    }
    if (loses || this.losing) this.verdicts++;
    this.losing = loses;
  }
}

/**
 * The DraftingMeters of one context's sequences (`DraftingMeters.of(context)`: the generations of a session, the
 * requests of a batch — timings belong to a context: its model, threads and batch), one per way of drafting: a
 * fixed depth by its layer, an exit policy by identity (the model worker builds one policy per exit spec), with
 * maxDraft, the adaptive options and greedy / sampled (acceptance differs) in the key. A server's requests choose
 * those freely, so the ways no sequence drafts through now are forgotten once there are more than MAX_KEPT meters.
 */
export class DraftingMeters {
  static readonly MAX_KEPT = 64;
  private static readonly byContext = new WeakMap<TransformerContext, DraftingMeters>();
  private readonly meters = new Map<unknown, Map<string, DraftingMeter>>();

  static of(context: TransformerContext): DraftingMeters {
    let meters = DraftingMeters.byContext.get(context);
    if (!meters) DraftingMeters.byContext.set(context, (meters = new DraftingMeters()));
    return meters;
  }

  for(checked: CheckedSpeculation, sampled: boolean): DraftingMeter | undefined {
    const { adaptive } = checked;
    if (!adaptive) return undefined;
    const drafter = checked.layer > 0 ? checked.layer : checked.policy;
    const key = `${checked.maxDraft}/${adaptive.minP1}/${adaptive.fallbackTokens}/${sampled ? 'sampled' : 'greedy'}`;
    const known = this.meters.get(drafter)?.get(key);
    if (known) return known;
    if (this.size >= DraftingMeters.MAX_KEPT) this.forgetIdle();
    let byOptions = this.meters.get(drafter);
    if (!byOptions) this.meters.set(drafter, (byOptions = new Map()));
    const meter = new DraftingMeter(adaptive);
    byOptions.set(key, meter);
    return meter;
  }

  /** Meters kept now. */
  get size(): number {
    let n = 0;
    for (const byOptions of this.meters.values()) n += byOptions.size;
    return n;
  }

  private forgetIdle(): void {
    for (const [drafter, byOptions] of this.meters) {
      for (const [key, meter] of byOptions) if (!meter.inUse) byOptions.delete(key);
      if (byOptions.size === 0) this.meters.delete(drafter);
    }
  }
}

/** The distribution and token of one drafted position (sampling), or its token alone (greedy). */
class DraftOutput implements RowOutput {
  token = -1;
  p1 = 1;
  q: Float64Array | undefined;
  constructor(private readonly sampler: Sampler) {}
  atExit(decider: ExitDecider, context: TransformerContext): void {
    this.p1 = decider.lens.reading.p1;
    // A fast lens's logits cover only its candidates: its top-1 is the greedy draft (sampling needs a faithful lens).
    if (decider.policy.lens.mode === 'fast') this.token = decider.lens.reading.top1;
    else this.choose(context.lensLogits());
  }
  atFullDepth(logits: Float32Array): void {
    this.p1 = 1;
    this.choose(logits);
  }
  private choose(logits: Float32Array): void {
    if (this.q === undefined) {
      this.token = this.sampler.options.temperature === 0 ? argmax(logits) : this.sampler.sample(logits);
      return;
    }
    this.sampler.distribution(logits, this.q);
    this.token = this.sampler.draw(this.q, logits.length);
  }
}

/** The verifier's distribution at the last draft (sampling), or its argmax (greedy). */
class VerifyOutput implements RowOutput {
  token = -1;
  p: Float64Array | undefined;
  constructor(private readonly sampler: Sampler) {}
  atExit(): void {
    throw new AdaInferError('INTERNAL', 'the verification step runs at full depth');
  }
  atFullDepth(logits: Float32Array): void {
    if (this.p) this.sampler.distribution(logits, this.p);
    else this.token = argmax(logits);
  }
}

/**
 * One sequence's drafter and verifier, for one generation: its rounds run on the rows of `group` (its cache slot),
 * which holds, after begin() and after each step that ran it until the round ends (afterStep), the next step's row.
 */
export class Speculation {
  readonly stats: SpeculativeStats;
  readonly maxDraft: number;
  readonly adaptive: AdaptiveDrafting | undefined;
  private readonly drafter: ExitDecider;
  private readonly draft: DraftOutput;
  private readonly verify: VerifyOutput;
  private readonly sampling: boolean;
  private readonly vocab: number;
  private readonly nLayer: number;
  /** Sampling: q of each drafted position, p of each verified one (k + 1), reused across rounds. */
  private readonly q: Float64Array[] = [];
  private readonly p: Float64Array[] = [];
  /** Greedy: the verifier's argmax after each drafted position. */
  private readonly verified: number[] = [];
  /** Per draft of the round: it ran the whole model (an exit policy did not stop it), so it is exact. */
  private readonly complete: boolean[] = [];
  /** Tokens the rounds gave, and the row-layers they computed. */
  private tokens = 0;
  private rowLayers = 0;
  // The round in progress: its first position, its drafts (drafts[0]: the last emitted token), drafts run, the most
  // it drafts, and whether the group's step is the verification.
  private pos = 0;
  private readonly drafts: number[] = [];
  private k = 0;
  private k0 = 0;
  private verifying = false;
  private t0 = 0;
  private t1 = 0;
  private draftMs = 0;
  private draftSteps = 0;
  private verifyMs = 0;
  /** Adaptive drafting: the meter this sequence shares with those that draft the same way, and the verdict its round began under. */
  private meter: DraftingMeter | undefined;
  private verdict = 0;

  /** `meter`: the adaptive drafting meter to share (DraftingMeters.for); by default one of its own. */
  constructor(
    readonly context: TransformerContext,
    readonly group: RowGroup,
    checked: CheckedSpeculation,
    private readonly sampler: Sampler,
    meter?: DraftingMeter,
  ) {
    const { layer, maxDraft, adaptive } = checked;
    this.maxDraft = maxDraft;
    this.adaptive = adaptive;
    this.meter = adaptive && (meter ?? new DraftingMeter(adaptive));
    this.meter?.attach();
    this.drafter = new ExitDecider(context, checked.policy);
    group.pending = [];
    // Drafted positions are verified where they rejoin a full-depth step: the verification step, or a draft an exit
    // policy ran to full depth (earlier drafts waiting at a shallower depth rejoin it).
    group.onRejoined = sampler.options.temperature > 0
      ? (p, logits) => this.sampler.distribution(logits, this.p[p - this.pos])
      : (p, logits) => (this.verified[p - this.pos] = argmax(logits));
    this.sampling = sampler.options.temperature > 0;
    this.draft = new DraftOutput(sampler);
    this.verify = new VerifyOutput(sampler);
    this.vocab = context.model.config.nVocab;
    this.nLayer = context.model.config.nLayer;
    if (this.sampling) {
      for (let j = 0; j <= maxDraft; j++) this.p.push(new Float64Array(this.vocab));
      for (let j = 0; j < maxDraft; j++) this.q.push(new Float64Array(this.vocab));
    }
    this.stats = {
      layer,
      drafted: 0,
      accepted: 0,
      acceptanceRate: 0,
      verifySteps: 0,
      meanDraftLength: 0,
      layersPerToken: 0,
      fallbackTokens: 0,
      draftStepMs: 0,
      verifyStepMs: 0,
    };
  }

  /**
   * Adaptive drafting: whether the next token should be decoded plainly, as the shared DraftingMeter decides (plain
   * while it measures plain decoding, while speculation measures slower, and while another sequence probes).
   * `plainStep` reports a plain step's time.
   */
  shouldDecodePlainly(): boolean {
    if (!this.meter?.shouldDecodePlainly(this)) return false;
    this.stats.fallbackTokens++;
    return true;
  }
  plainStep(ms: number): void {
    this.meter?.plainStep(ms);
  }

  /** This sequence drafts no more (its generation ended): a probe it held passes on. Idempotent. */
  close(): void {
    this.meter?.release(this);
    this.meter = undefined;
  }

  /**
   * Starts a round from `last` (the last emitted token) at position `pos`, with up to `maxDraft` drafts (fewer where
   * the context ends: positions pos..pos+k must fit): the group then holds the round's first step.
   */
  begin(last: number, pos: number, maxDraft: number): void {
    this.t0 = performance.now();
    if (this.meter) this.verdict = this.meter.currentVerdict;
    const g = this.group;
    this.pos = pos;
    this.k = 0;
    this.k0 = Math.max(0, Math.min(maxDraft, this.maxDraft, this.context.contextSize - pos - 1));
    g.pending!.length = 0;
    g.count = 1;
    g.from = 0;
    this.drafts.length = 0;
    this.drafts.push(last);
    this.verified.length = 0;
    this.prepare(false);
  }

  /**
   * After a step that ran the group: undefined while the round goes on (the group then holds its next step), or
   * the round's emitted tokens — the accepted drafts and the full model's next; the cache then holds positions up
   * to pos + accepted (the caller records `last` and the accepted drafts).
   */
  afterStep(): { tokens: number[]; accepted: number } | undefined {
    const g = this.group;
    const k = this.k;
    if (!this.verifying) {
      this.complete[k] = g.layers === this.nLayer;
      this.drafts.push(this.draft.token);
      this.k++;
      this.prepare(this.adaptive !== undefined && this.draft.p1 < this.adaptive.minP1);
      return undefined;
    }
    const out = this.sampling ? this.acceptSampled(this.drafts, k) : this.acceptGreedy(this.drafts, k);
    const t2 = performance.now();
    const s = this.stats;
    s.drafted += k;
    s.accepted += out.accepted;
    s.verifySteps++;
    s.acceptanceRate = s.drafted > 0 ? s.accepted / s.drafted : 0;
    s.meanDraftLength = s.drafted / s.verifySteps;
    this.tokens += out.tokens.length;
    // Every position of the round ran each layer once: its draft layers, then the rest where it rejoined.
    this.rowLayers += (k + 1) * this.nLayer;
    s.layersPerToken = this.rowLayers / this.tokens;
    this.draftMs += this.t1 - this.t0;
    this.draftSteps += k;
    this.verifyMs += t2 - this.t1;
    s.draftStepMs = this.draftSteps > 0 ? this.draftMs / this.draftSteps : 0;
    s.verifyStepMs = this.verifyMs / s.verifySteps;
    this.meter?.roundDone(this, this.verdict, (t2 - this.t0) / out.tokens.length);
    return out;
  }

  /** One whole round on `engine` (the sequence alone in its steps): begin, then steps until it ends. */
  round(engine: StepEngine, last: number, pos: number, maxDraft: number): { tokens: number[]; accepted: number } {
    this.begin(last, pos, maxDraft);
    for (;;) {
      engine.run([this.group]);
      const out = this.afterStep();
      if (out) return out;
    }
  }

  /** The group's next step: draft `k` (its input drafts[k] at pos + k), or — after the last draft — the verification. */
  private prepare(stopDrafting: boolean): void {
    const g = this.group;
    const k = this.k;
    g.tokens = [this.drafts[k]];
    g.pos = this.pos + k;
    this.verifying = stopDrafting || k >= this.k0;
    if (!this.verifying) {
      g.output = this.draft;
      g.decider = this.drafter;
      this.draft.q = this.sampling ? this.q[k] : undefined;
      return;
    }
    this.t1 = performance.now();
    g.output = this.verify;
    g.decider = undefined;
    this.verify.p = this.sampling ? this.p[k] : undefined;
  }

  /** Greedy: drafts are kept while each equals the verifier's argmax; then the verifier's own token. */
  private acceptGreedy(drafts: number[], k: number): { tokens: number[]; accepted: number } {
    let accepted = 0;
    while (accepted < k && (this.complete[accepted] || this.verified[accepted] === drafts[accepted + 1])) accepted++;
    const tokens = drafts.slice(1, accepted + 1);
    tokens.push(accepted < k ? this.verified[accepted] : this.verify.token);
    return { tokens, accepted };
  }

  /**
   * Speculative sampling: draft j + 1 (drawn from q_j) is kept with probability min(1, p_j(x) / q_j(x)); the first
   * rejected one is replaced by a draw from max(0, p_j − q_j) normalised; when all are kept the next is drawn
   * from p_k. A draft that ran the whole model was drawn from p_j itself: kept.
   */
  private acceptSampled(drafts: number[], k: number): { tokens: number[]; accepted: number } {
    const tokens: number[] = [];
    for (let j = 0; j < k; j++) {
      const x = drafts[j + 1];
      const p = this.p[j];
      const q = this.q[j];
      if (this.complete[j] || this.sampler.uniform() * q[x] < p[x]) {
        tokens.push(x);
        continue;
      }
      let mass = 0;
      for (let i = 0; i < this.vocab; i++) mass += q[i] = Math.max(0, p[i] - q[i]);
      // p = q up to rounding where x was rejected: the residual is empty, p itself is the distribution.
      tokens.push(this.sampler.draw(mass > 1e-12 ? q : p, this.vocab));
      return { tokens, accepted: j };
    }
    tokens.push(this.sampler.draw(this.p[k], this.vocab));
    return { tokens, accepted: k };
  }
}
