/**
 * The step engine: one batch of rows through the layer loop (TransformerContext.forwardRows) with everything that
 * happens between two layers and after the last one. The schedulers decide what a step holds — a Session
 * (lib/engine/sequence.ts: one cache slot, prefix reuse, 'recompute') and batches (lib/engine/batch.ts: many
 * slots, continuous batching) — and read each group's output; the step does the rest:
 *
 *  1. load: every group's rows (tokens, cache slot, positions), one group after the other;
 *  2. between layers: each deciding group's ExitDecider reads the lens at the group's last row; a group that
 *     exits hands that read to its output at once (the next read overwrites the lens logits) and its rows
 *     leave the batch — the continuing rows move to the front (compaction), so later layers run on fewer rows.
 *     With `compaction: false` exited rows run on, their K/V writes sent to a scratch slot (the baseline that
 *     measures compaction). Rows of earlier exits that wait for their skipped layers ('recompute') rejoin the
 *     batch at the layer they stopped at;
 *  3. after the loop: full-depth groups read the head's logits at their last row, then the K/V of the layers
 *     an exit skipped are filled (kvFill).
 * A group with `pending` rows (kvFill 'recompute', self-speculative drafts) keeps each exited row's hidden state
 * instead: its pending rows rejoin a later step of the group at their depth, right after the group's own rows
 * (the rows of the groups after it move down to make room), so each of its rows is computed once per layer.
 * Per-layer work is a loop over the step's deciding groups (no allocation); rows move only when a group exits.
 *
 * Every row is computed independently of the other rows of its step (the native blocks' contract, tested bit
 * for bit), so a sequence's results do not depend on what else a step holds — only on how its own rows are
 * grouped into steps (the attention kernel's rounding follows that grouping).
 */
import { fromNativeError } from '../bindings/native';
import { AdaInferError } from '../errors';
import { ExitDecider } from '../exit/decider';
import { TransformerContext } from '../model/transformer';
import { KvFill } from './options';
import { Sampler } from './sampling';

/** Where a group's output goes: read once, at the exit layer's lens or from the model's logits. */
export interface RowOutput {
  /** The group exited: `decider.lens.reading` and `context.lensLogits()` are the exit layer's. */
  atExit(decider: ExitDecider, context: TransformerContext): void;
  /** Full depth: the head's logits of the group's last row. */
  atFullDepth(logits: Float32Array): void;
}

/**
 * The next token of a generation — THE place where it is chosen: at full depth sampled from the model's logits;
 * after an exit from the exit layer's lens logits (faithful lens), or its top-1 token (a fast lens's logits
 * cover only its candidates).
 */
export class NextToken implements RowOutput {
  token = -1;
  constructor(readonly sampler: Sampler) {}
  atExit(decider: ExitDecider, context: TransformerContext): void {
    this.token = decider.policy.lens.mode === 'fast' ? decider.lens.reading.top1 : this.sampler.sample(context.lensLogits());
  }
  atFullDepth(logits: Float32Array): void {
    this.token = this.sampler.sample(logits);
  }
}

/** Single-token classification: the label tokens' logits at the last position (at the exit layer's lens). */
export class LabelScores implements RowOutput {
  logits: number[] = [];
  constructor(readonly labelTokens: readonly number[]) {}
  atExit(_decider: ExitDecider, context: TransformerContext): void {
    this.atFullDepth(context.lensLogits());
  }
  atFullDepth(logits: Float32Array): void {
    this.logits = this.labelTokens.map((t) => logits[t]);
  }
  /** The winning label (the lowest index on ties) and the softmax over the labels' logits. */
  result(): { index: number; probs: number[] } {
    const z = this.logits;
    const max = Math.max(...z);
    const e = z.map((v) => Math.exp(v - max));
    const sum = e.reduce((a, b) => a + b, 0);
    let index = 0;
    for (let i = 1; i < z.length; i++) if (z[i] > z[index]) index = i;
    return { index, probs: e.map((v) => v / sum) };
  }
}

/** 'recompute': a position an exit stopped after `depth` layers, with its hidden state there. */
export interface PendingRow {
  pos: number;
  depth: number;
  hidden: Float32Array;
}

/** The rows of one sequence in a step: `count` tokens `tokens[from..]` at positions `pos..` of cache slot `slot`. */
export interface RowGroup {
  slot: number;
  pos: number;
  tokens: readonly number[];
  from: number;
  count: number;
  /** Reads the output at the group's last row (a prompt's last chunk, a decode row); undefined: none this step. */
  output: RowOutput | undefined;
  /** Decides the exit at the last row (with an output only); undefined: full depth. */
  decider: ExitDecider | undefined;
  /**
   * kvFill 'recompute' and self-speculative drafts: the sequence's positions waiting for their skipped layers.
   * They rejoin this step at their depth (after the group's own rows); after an exit, the group's rows join them.
   * A group with `pending` never has its exited rows' K/V filled by the step's kvFill.
   */
  pending: PendingRow[] | undefined;
  /**
   * Called after a full-depth step with an output for each pending row that rejoined it, with the head's logits at
   * its position (the verification of drafted positions in self-speculative decoding); undefined: not read. The
   * logits of the group's last row and of its rejoined rows come from one head call (readFullDepth).
   */
  onRejoined: ((pos: number, logits: Float32Array) => void) | undefined;
  /** Set by the step: the group's first row (moved by compaction and by other groups' rejoins). */
  rowStart: number;
  /** Set by the step: its pending rows that rejoined this step, in row order after the group's own rows. */
  joined: PendingRow[];
  /** Set by the step: layers the group ran — its exit layer, or nLayer. */
  layers: number;
}

export function newRowGroup(slot: number): RowGroup {
  return { slot, pos: 0, tokens: [], from: 0, count: 0, output: undefined, decider: undefined, pending: undefined, onRejoined: undefined, rowStart: 0, joined: [], layers: 0 };
}

export interface StepOptions {
  /** What exited rows of groups without `pending` get for their skipped layers ('recompute': nothing here). */
  kvFill: KvFill;
  /** Exited rows leave the batch between layers (true), or run on with their K/V sent to `scratchSlot`. */
  compaction: boolean;
  /** The cache slot that takes exited rows' K/V without compaction (one no sequence uses). */
  scratchSlot: number;
  /** Called at every layer boundary; throwing there abandons the step (a Session's abort). */
  betweenLayers?: () => void;
}

export interface StepStats {
  steps: number;
  /** Σ over steps and layers of the rows that ran the layer (the work done, in row-layers). */
  rowLayers: number;
  /** The same at full depth without exits: Σ over steps of rows × nLayer. */
  rowLayersFull: number;
  /** Rows × layers of K/V propagation (fillKv). */
  fillKvRowLayers: number;
}

export class StepEngine {
  readonly stats: StepStats = { steps: 0, rowLayers: 0, rowLayersFull: 0, fillKvRowLayers: 0 };
  private readonly nLayer: number;
  private readonly d: number;
  // The step in flight.
  private groups: readonly RowGroup[] = [];
  /** Groups that decide, exited or not. */
  private readonly deciding: RowGroup[] = [];
  /** Deciding groups that have not exited. */
  private undecided = 0;
  /** Groups still running (not exited). */
  private running = 0;
  /** Rows in the batch after the last boundary. */
  private rows = 0;
  /** Groups with pending rows at the start of the step (they may rejoin it). */
  private readonly rejoining: RowGroup[] = [];
  /** Exit hidden states of groups whose rows moved or ran on before their K/V fill ('propagate'). */
  private stash = new Float32Array(0);
  private stashed = 0;
  private readonly stashAt = new Map<RowGroup, number>();
  private readonly afterLayer: (layer: number, rows: number) => number;

  constructor(
    readonly context: TransformerContext,
    readonly options: StepOptions,
  ) {
    this.nLayer = context.model.config.nLayer;
    this.d = context.model.config.nEmbd;
    this.afterLayer = (layer, rows) => this.boundary(layer, rows);
  }

  /** Runs one step over `groups`, whose rows must fit the context's batch. */
  run(groups: readonly RowGroup[]): void {
    const c = this.context.native;
    this.groups = groups;
    this.deciding.length = 0;
    this.rejoining.length = 0;
    this.stashed = 0;
    this.stashAt.clear();
    let rows = 0;
    for (const g of groups) {
      g.rowStart = rows;
      g.layers = this.nLayer;
      g.joined.length = 0;
      for (let i = 0; i < g.count; i++) {
        c.tokens[rows + i] = g.tokens[g.from + i];
        c.rowSeq[rows + i] = g.slot;
        c.rowPos[rows + i] = g.pos + i;
      }
      rows += g.count;
      if (g.output && g.decider?.decides) {
        g.decider.begin();
        this.deciding.push(g);
      }
      if (g.pending && g.pending.length > 0) this.rejoining.push(g);
    }
    const rejoins = this.rejoining.length > 0;
    // Without compaction exited rows stay in the batch, where rejoined rows of the groups after them would have to
    // move around them: pending rows rejoin such a step only when it holds one group.
    if (rejoins && !this.options.compaction && groups.length !== 1)
      throw new AdaInferError('INTERNAL', 'pending rows rejoin a step without compaction only when it holds one group');
    this.undecided = this.deciding.length;
    this.running = groups.length;
    this.rows = rows;
    const watch = this.undecided > 0 || rejoins || this.options.betweenLayers !== undefined;
    const layers = this.context.forwardRows(rows, watch ? this.afterLayer : undefined);
    if (layers === this.nLayer) this.stats.rowLayers += watch ? this.rows : rows * this.nLayer;
    this.stats.rowLayersFull += rows * this.nLayer;
    this.stats.steps++;

    for (const g of groups) if (g.output && g.layers === this.nLayer) this.readFullDepth(g);
    for (const g of this.rejoining) if (g.layers === this.nLayer) this.settle(g);
    if (this.options.kvFill === 'propagate' && this.undecided < this.deciding.length) this.propagate();
  }

  /**
   * The head's logits at a full-depth group's last row, and — when the group reads its rejoined rows (onRejoined),
   * which follow that row — at each of them, in one head call: the rows share each read of the head matrix.
   */
  private readFullDepth(g: RowGroup): void {
    const last = g.rowStart + g.count - 1;
    const joined = g.onRejoined ? g.joined.length : 0;
    if (joined === 0) {
      g.output!.atFullDepth(this.context.logits(last));
      return;
    }
    const vocab = this.context.model.config.nVocab;
    const logits = this.context.logitsRows(last, 1 + joined);
    g.output!.atFullDepth(logits.subarray(0, vocab));
    g.joined.forEach((p, i) => g.onRejoined!(p.pos, logits.subarray((i + 1) * vocab, (i + 2) * vocab)));
  }

  /** After layer `layer` ran on `rows` rows: exits, compaction, rejoins. Returns the rows that go on. */
  private boundary(layer: number, rows: number): number {
    this.options.betweenLayers?.();
    this.stats.rowLayers += rows;
    let exited = 0;
    if (this.undecided > 0) {
      for (const g of this.deciding) {
        if (g.layers !== this.nLayer || !g.decider!.decide(layer, g.rowStart + g.count - 1)) continue;
        g.layers = layer + 1;
        g.output!.atExit(g.decider!, this.context);
        // Its rows wait at this depth: keep their states before compaction moves other rows over them.
        if (g.pending) this.park(g);
        exited++;
      }
    }
    if (exited > 0) {
      this.undecided -= exited;
      this.running -= exited;
      rows = this.options.compaction ? this.compact(layer + 1) : this.redirect(layer + 1, rows);
    }
    if (rows > 0 && this.rejoining.length > 0) rows = this.rejoin(layer + 1, rows);
    this.rows = rows;
    return rows;
  }

  /** Groups that just exited (after `depth` layers) leave; the others move to the front. Returns their rows. */
  private compact(depth: number): number {
    const c = this.context.native;
    const goesOn = this.running > 0;
    let write = 0;
    for (const g of this.groups) {
      if (g.layers < this.nLayer) {
        // Its exit state is needed after the loop; rows that go on may overwrite it (propagate).
        if (g.layers === depth && goesOn) this.keep(g);
        continue;
      }
      const n = g.count + g.joined.length;
      if (g.rowStart !== write) {
        c.moveHidden(write, g.rowStart, n);
        c.rowSeq.copyWithin(write, g.rowStart, g.rowStart + n);
        c.rowPos.copyWithin(write, g.rowStart, g.rowStart + n);
        g.rowStart = write;
      }
      write += n;
    }
    return write;
  }

  /** Without compaction: exited rows run on, writing their K/V to the scratch slot, until every group exited. */
  private redirect(depth: number, rows: number): number {
    const c = this.context.native;
    const goesOn = this.running > 0;
    for (const g of this.deciding) {
      if (g.layers !== depth) continue;
      c.rowSeq.fill(this.options.scratchSlot, g.rowStart, g.rowStart + g.count);
      if (goesOn) this.keep(g);
    }
    return goesOn ? rows : 0;
  }

  /** Keeps a group's exit hidden states for its K/V fill ('propagate'; a group with pending rows parks them). */
  private keep(g: RowGroup): void {
    if (this.options.kvFill !== 'propagate' || g.pending) return;
    const need = (this.stashed + g.count) * this.d;
    if (this.stash.length < need) {
      const grown = new Float32Array(Math.max(need, this.context.batchSize * this.d));
      grown.set(this.stash.subarray(0, this.stashed * this.d));
      this.stash = grown;
    }
    this.context.native.readHidden(g.rowStart, g.count, this.stash.subarray(this.stashed * this.d, need));
    this.stashAt.set(g, this.stashed);
    this.stashed += g.count;
  }

  /**
   * 'propagate' (CALM): the exit hidden state of every exited row computes the K/V of its skipped layers. The
   * rows are loaded sorted by exit depth, so the rows needing layer j are a prefix and each fillKv(j, n) call
   * covers exactly them. Groups that exited when the loop ended are still in place; the others were kept.
   */
  private propagate(): void {
    const c = this.context.native;
    const exited = this.groups.filter((g) => g.layers < this.nLayer && !g.pending).sort((a, b) => a.layers - b.layers);
    if (exited.length === 0) return;
    // Kept rows are written from row 0 on: rows still in place must be kept too before that.
    if (this.stashed > 0) for (const g of exited) if (!this.stashAt.has(g)) this.keep(g);
    let r = 0;
    const prefixEnd: number[] = [];
    for (const g of exited) {
      const at = this.stashAt.get(g);
      if (at !== undefined) c.writeHidden(r, g.count, this.stash.subarray(at * this.d, (at + g.count) * this.d));
      else if (g.rowStart !== r) c.moveHidden(r, g.rowStart, g.count); // all in place, in row order: moves down
      for (let i = 0; i < g.count; i++) {
        c.rowSeq[r + i] = g.slot;
        c.rowPos[r + i] = g.pos + i;
      }
      r += g.count;
      prefixEnd.push(r);
    }
    let k = 0;
    try {
      for (let layer = exited[0].layers; layer < this.nLayer; layer++) {
        while (k < exited.length && exited[k].layers <= layer) k++;
        c.fillKv(layer, prefixEnd[k - 1]);
        this.stats.fillKvRowLayers += prefixEnd[k - 1];
      }
    } catch (err) {
      throw fromNativeError(err);
    }
  }

  /**
   * Pending positions that stopped after `depth` layers rejoin here, each right after its group's rows (and the
   * rows that rejoined it before): groups are walked from the last, each moved down by the rows inserted before it,
   * so no row is overwritten before it moved. Returns the rows that go on.
   */
  private rejoin(depth: number, rows: number): number {
    let added = 0;
    for (const g of this.rejoining) if (g.layers === this.nLayer) for (const p of g.pending!) if (p.depth === depth) added++;
    if (added === 0) return rows;
    const c = this.context.native;
    let shift = added;
    for (let i = this.groups.length - 1; i >= 0 && shift > 0; i--) {
      const g = this.groups[i];
      if (g.layers !== this.nLayer) continue; // exited: its rows left the batch (compaction)
      let joins = 0;
      if (g.pending && g.pending.length > 0) for (const p of g.pending) if (p.depth === depth) joins++;
      shift -= joins;
      const n = g.count + g.joined.length;
      if (shift > 0) {
        c.moveHidden(g.rowStart + shift, g.rowStart, n);
        c.rowSeq.copyWithin(g.rowStart + shift, g.rowStart, g.rowStart + n);
        c.rowPos.copyWithin(g.rowStart + shift, g.rowStart, g.rowStart + n);
        g.rowStart += shift;
      }
      if (joins === 0) continue;
      let row = g.rowStart + n;
      for (const p of g.pending!) {
        if (p.depth !== depth) continue;
        c.writeHidden(row, 1, p.hidden);
        c.rowSeq[row] = g.slot;
        c.rowPos[row] = p.pos;
        g.joined.push(p);
        row++;
      }
    }
    return rows + added;
  }

  /** A group with pending rows exited after `g.layers` layers: its rejoined rows and its own rows wait there. */
  private park(g: RowGroup): void {
    const c = this.context.native;
    g.joined.forEach((p, i) => {
      p.depth = g.layers;
      c.readHidden(g.rowStart + g.count + i, 1, p.hidden);
    });
    for (let i = 0; i < g.count; i++) {
      const hidden = new Float32Array(this.d);
      c.readHidden(g.rowStart + i, 1, hidden);
      g.pending!.push({ pos: g.pos + i, depth: g.layers, hidden });
    }
  }

  /** After a full-depth step every position that rejoined it is complete (onRejoined read them): no longer pending. */
  private settle(g: RowGroup): void {
    if (g.joined.length === 0) return;
    const done = new Set(g.joined);
    const pending = g.pending!;
    let w = 0;
    for (const p of pending) if (!done.has(p)) pending[w++] = p;
    pending.length = w;
  }
}
