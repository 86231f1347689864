/**
 * The exit decision of one row — THE place where a policy meets the layer loop. After each layer the policy's
 * schedule says whether to look; if so the logit lens of the row is read and the policy decides. Every engine
 * (lib/engine/step.ts: sessions and batches, one decider per sequence) and trace collection (lib/exit/collect.ts,
 * with an observing policy) decide through it.
 */
import { TransformerContext } from '../model/transformer';
import { extrasFor, LensReader } from './lens';
import { ExitPolicy, isCheckedLayer } from './policy';

/** How one batch went through the layer loop under a policy (ExitDecider.forward). */
export interface ExitOutcome {
  /** Layers run (nLayer at full depth). */
  layers: number;
  /** The exit layer's top-1 token (its lens reading), or -1 at full depth. */
  token: number;
}

export class ExitDecider {
  readonly lens: LensReader;
  /** Layers run when the policy stopped the current token; 0 while it has not. */
  exitLayer = 0;
  /** Lens reads so far, over every token. */
  lensReads = 0;
  private readonly nLayer: number;

  constructor(
    readonly context: TransformerContext,
    readonly policy: ExitPolicy,
  ) {
    this.lens = new LensReader(context, policy.lens, extrasFor(policy.features));
    this.nLayer = context.model.config.nLayer;
  }

  /** A 'never' policy: no row ever exits and no lens is read, so engines leave such rows undecided. */
  get decides(): boolean {
    return this.policy.kind !== 'never';
  }

  /** Starts a new token (the policy's state across layers, the fast lens's candidates). */
  begin(): void {
    this.policy.begin();
    this.lens.begin();
    this.exitLayer = 0;
  }

  /**
   * After layer `layer` (0-based) ran on batch row `row`: does the policy stop this token here? On true,
   * `lens.reading` and `context.lensLogits()` are the exit layer's until the next lens read of this context.
   */
  decide(layer: number, row: number): boolean {
    if (!isCheckedLayer(this.policy.schedule, layer, this.nLayer)) return false;
    this.lensReads++;
    if (!this.policy.shouldExit(layer, this.lens.read(row), this.nLayer)) return false;
    this.exitLayer = layer + 1;
    return true;
  }

  /**
   * Runs tokens already in the context's buffer, rows [0, n) at positions pos0.. of sequence 0, deciding at the
   * last row; no K/V fill (the evaluation tools run each example from an empty cache).
   */
  forward(n: number, pos0: number): ExitOutcome {
    this.begin();
    const layers = this.context.forward(n, pos0, this.decides ? (layer, rows) => this.decide(layer, rows - 1) : undefined);
    return { layers, token: layers < this.nLayer ? this.lens.reading.top1 : -1 };
  }
}
