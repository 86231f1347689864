/**
 * Adaptive drafting's shared verdict (lib/engine/speculative.ts DraftingMeter): when the sequences that draft the
 * same way decode plainly and when they speculate — measuring, falling back for a window counted over all of them
 * and doubling while rounds lose, one prober at a time, rounds begun under an old verdict ignored — and which
 * sequences share a meter (DraftingMeters). Pure bookkeeping: timings are given, no model runs.
 */
import { DraftingMeter, DraftingMeters } from '../../lib/engine/speculative';
import { fixedDepthPolicy, thresholdPolicy } from '../../lib/exit/policy';
import type { TransformerContext } from '../../lib/model/transformer';

const ADAPTIVE = { minP1: 0.3, fallbackTokens: 4 };

/** A meter with `sharers` attached sequences (plain objects stand for Speculations) and its PROBE plain steps of 1 ms done. */
function measured(sharers: number, adaptive = ADAPTIVE): { meter: DraftingMeter; seqs: object[] } {
  const meter = new DraftingMeter(adaptive);
  const seqs = Array.from({ length: sharers }, () => ({}));
  for (let i = 0; i < sharers; i++) meter.attach();
  for (let i = 0; i < DraftingMeter.PROBE; i++) meter.plainStep(1);
  return { meter, seqs };
}

/** A whole round of `who` (begun now) at `msPerToken`, against plain steps of 1 ms. */
function round(meter: DraftingMeter, who: object, msPerToken: number): void {
  const verdict = meter.currentVerdict;
  meter.roundDone(who, verdict, msPerToken);
}

/** Plain decisions `who` gets before it is let speculate (at most `limit`). */
function plainRun(meter: DraftingMeter, who: object, limit = 10_000): number {
  let n = 0;
  while (n < limit && meter.shouldDecodePlainly(who)) n++;
  return n;
}

describe('DraftingMeter', () => {
  test('plain while plain decoding is being measured, then every sequence speculates while rounds win', () => {
    const meter = new DraftingMeter(ADAPTIVE);
    const [a, b] = [{}, {}];
    meter.attach();
    meter.attach();
    for (let i = 0; i < DraftingMeter.PROBE; i++) {
      expect(meter.shouldDecodePlainly(a)).toBe(true);
      meter.plainStep(1);
    }
    expect(meter.shouldDecodePlainly(a)).toBe(false);
    expect(meter.shouldDecodePlainly(b)).toBe(false);
    round(meter, a, 0.5);
    round(meter, b, 0.6);
    expect(meter.shouldDecodePlainly(a)).toBe(false);
    expect(meter.shouldDecodePlainly(b)).toBe(false);
  });

  test('a losing round: plain for fallbackTokens x sharers decisions of all sequences together, then one prober at a time', () => {
    const { meter, seqs } = measured(3);
    const [a, b, c] = seqs;
    const verdict = meter.currentVerdict;
    round(meter, a, 2); // slower than plain (1 ms per token)
    // 4 tokens x 3 sharers = 12 plain decisions, whoever takes them
    let plain = 0;
    for (let i = 0; i < 4; i++) for (const s of seqs) if (meter.shouldDecodePlainly(s)) plain++;
    expect(plain).toBe(12);
    // the window is used up: the first to ask probes, the others decode plainly until its round reports
    expect(meter.shouldDecodePlainly(b)).toBe(false);
    expect(meter.shouldDecodePlainly(a)).toBe(true);
    expect(meter.shouldDecodePlainly(c)).toBe(true);
    expect(meter.shouldDecodePlainly(b)).toBe(false);
    // b's round began under the verdict a's loss drew; a round begun before that one (here, c's) reports nothing
    meter.roundDone(c, verdict, 0.1);
    expect(meter.shouldDecodePlainly(c)).toBe(true);
    round(meter, b, 3); // the probe loses: the window doubles
    expect(plainRun(meter, c)).toBe(2 * 4 * 3);
  });

  test('the window doubles while probes lose, up to MAX_BACKOFF; a winning probe lets every sequence speculate and resets it', () => {
    const { meter, seqs } = measured(1);
    const [a] = seqs;
    round(meter, a, 2);
    const windows: number[] = [];
    for (let i = 0; i < 7; i++) {
      windows.push(plainRun(meter, a));
      round(meter, a, 2);
    }
    expect(DraftingMeter.MAX_BACKOFF).toBe(16);
    expect(windows).toEqual([4, 8, 16, 32, 64, 64, 64]);
    // the probe after the last window wins
    expect(plainRun(meter, a)).toBe(4 * DraftingMeter.MAX_BACKOFF);
    round(meter, a, 0.5);
    expect(meter.shouldDecodePlainly(a)).toBe(false);
    // and the next loss starts from the first window again
    round(meter, a, 5);
    expect(plainRun(meter, a)).toBe(4);
  });

  test('a prober that stops drafting passes the probe on; fallbackTokens 0 never falls back', () => {
    const { meter, seqs } = measured(2);
    const [a, b] = seqs;
    round(meter, a, 2);
    plainRun(meter, a, 8);
    expect(meter.shouldDecodePlainly(a)).toBe(false); // a probes
    expect(meter.shouldDecodePlainly(b)).toBe(true);
    meter.release(a); // a's generation ended mid-round
    expect(meter.shouldDecodePlainly(b)).toBe(false);

    const never = measured(2, { minP1: 0.3, fallbackTokens: 0 });
    round(never.meter, never.seqs[0], 10);
    expect(never.meter.shouldDecodePlainly(never.seqs[0])).toBe(false);
    expect(never.meter.shouldDecodePlainly(never.seqs[1])).toBe(false);
  });
});

describe('DraftingMeters', () => {
  test('one meter per drafter, maxDraft, adaptive options and greedy / sampled; none without adaptive drafting', () => {
    const meters = new DraftingMeters();
    const policy = thresholdPolicy('gap', 0.3, { minLayer: 1, checkEvery: 1 });
    const fixed = (layer: number, maxDraft = 4) => ({ policy: fixedDepthPolicy(layer), layer, maxDraft, adaptive: ADAPTIVE });
    const byPolicy = { policy, layer: 0, maxDraft: 4, adaptive: ADAPTIVE };
    const m = meters.for(fixed(3), false);
    expect(m).toBeInstanceOf(DraftingMeter);
    expect(meters.for(fixed(3), false)).toBe(m); // a fresh fixedDepthPolicy object of the same layer
    expect(meters.for(fixed(3), true)).not.toBe(m);
    expect(meters.for(fixed(4), false)).not.toBe(m);
    expect(meters.for(fixed(3, 5), false)).not.toBe(m);
    expect(meters.for({ ...fixed(3), adaptive: { minP1: 0.5, fallbackTokens: 4 } }, false)).not.toBe(m);
    expect(meters.for(byPolicy, false)).toBe(meters.for({ ...byPolicy }, false));
    expect(meters.for(byPolicy, false)).not.toBe(m);
    expect(meters.for({ ...fixed(3), adaptive: undefined }, false)).toBeUndefined();
  });

  test('one set per context: a session\'s generations and a batch\'s requests share it, other contexts do not', () => {
    const [a, b] = [{}, {}] as unknown as TransformerContext[];
    expect(DraftingMeters.of(a)).toBe(DraftingMeters.of(a));
    expect(DraftingMeters.of(a)).not.toBe(DraftingMeters.of(b));
  });

  test('ways of drafting no sequence uses are forgotten beyond MAX_KEPT (a server\'s requests choose them freely)', () => {
    const meters = new DraftingMeters();
    const way = (minP1: number) => ({ policy: fixedDepthPolicy(2), layer: 2, maxDraft: 4, adaptive: { minP1, fallbackTokens: 4 } });
    const busy = meters.for(way(0), false)!;
    busy.attach(); // a sequence drafts through it
    for (let i = 1; i <= 3 * DraftingMeters.MAX_KEPT; i++) meters.for(way(i / 1000), false);
    expect(meters.size).toBeLessThanOrEqual(DraftingMeters.MAX_KEPT);
    expect(meters.for(way(0), false)).toBe(busy);
  });
});
