/**
 * Seeds and run counts of the property tests. CI runs the fixed values; to search harder locally:
 *   ADAINFER_FUZZ_SCALE=20 ADAINFER_FUZZ_SEED=12345 npx jest dist/test/standalone/fuzz_
 * (a failure prints its seed and path, and fast-check replays it with { seed, path }).
 */
export function fuzzRuns(seed: number, numRuns: number): { seed: number; numRuns: number } {
  const scale = Number(process.env.ADAINFER_FUZZ_SCALE ?? '1');
  const override = process.env.ADAINFER_FUZZ_SEED;
  return {
    seed: override !== undefined && override !== '' ? (Number(override) ^ seed) >>> 0 : seed,
    numRuns: Math.max(1, Math.round(numRuns * (Number.isFinite(scale) && scale > 0 ? scale : 1))),
  };
}
