/**
 * Self-speculative decoding through the public API (the model worker resolves the drafter) and the CLI:
 * `speculative: { draft, maxDraft?, adaptive? }` with a fixed layer or a threshold spec gives the full-depth
 * greedy output; sampling runs and reports its acceptance; bad options are INVALID_OPTION errors;
 * `adainfer generate --speculative --draft-layer N --json` reports acceptance and layers per token.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import { loadModel, Model } from '../../lib';
import { repoRoot } from '../helpers';

const MAIN = path.join(repoRoot(), 'dist', 'lib', 'cli', 'main.js');
const PROMPT = 'Lily and Tom went to the park. They';

describe('speculative decoding through the API and the CLI', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(undefined, { threads: 1 });
  });
  afterAll(async () => {
    await model.dispose();
  });

  test('a fixed draft layer and a threshold drafter give the full-depth greedy output', async () => {
    const session = await model.createSession();
    const greedy = { maxTokens: 40, temperature: 0, stopAtEos: false };
    const full = await session.generate(PROMPT, greedy);
    for (const draft of [{ layer: 4 }, { kind: 'threshold' as const, feature: 'p1' as const, value: 0.6, minLayer: 2 }]) {
      const r = await session.generate(PROMPT, { ...greedy, speculative: { draft, maxDraft: 3 } });
      expect(r.tokens).toEqual(full.tokens);
      const s = r.speculative!;
      expect(s.drafted).toBeGreaterThan(0);
      expect(s.acceptanceRate).toBeGreaterThan(0);
      expect(s.acceptanceRate).toBeLessThanOrEqual(1);
      expect(s.layersPerToken).toBeGreaterThan(0);
    }
    await session.dispose();
  });

  test('sampling: drafts accepted with min(1, p/q); the same seed gives the same text', async () => {
    const session = await model.createSession();
    const o = { maxTokens: 30, temperature: 0.8, seed: 11, stopAtEos: false, speculative: { draft: { layer: 5 }, adaptive: false } };
    const a = await session.generate(PROMPT, o);
    const b = await session.generate(PROMPT, o);
    expect(a.tokens).toHaveLength(30);
    expect(b.tokens).toEqual(a.tokens);
    expect(a.speculative!.accepted).toBeGreaterThan(0);
    await session.dispose();
  });

  test('bad speculative options are INVALID_OPTION errors', async () => {
    const session = await model.createSession();
    const bad = (speculative: unknown) => session.generate(PROMPT, { maxTokens: 4, temperature: 0, speculative: speculative as never });
    await expect(bad({ maxDraft: 2 })).rejects.toMatchObject({ code: 'INVALID_OPTION' });
    await expect(bad({ draft: { layer: 99 } })).rejects.toMatchObject({ code: 'INVALID_OPTION' });
    await expect(bad({ draft: 'never' })).rejects.toMatchObject({ code: 'INVALID_OPTION' });
    await expect(bad({ draft: { layer: 2 }, adaptive: 'yes' })).rejects.toMatchObject({ code: 'INVALID_OPTION' });
    await session.dispose();
  });

  test('adainfer generate --speculative --draft-layer N --json', () => {
    const run = (args: string[]) => spawnSync(process.execPath, [MAIN, 'generate', '--threads', '1', '-p', PROMPT, '-n', '24', '--json', ...args], { encoding: 'utf8', timeout: 120_000 });
    const full = run(['--temp', '0']);
    const spec = run(['--speculative', '--draft-layer', '4', '--max-draft', '3']);
    expect(spec.status).toBe(0);
    const a = JSON.parse(full.stdout);
    const b = JSON.parse(spec.stdout);
    expect(b.tokens).toEqual(a.tokens);
    expect(b.speculative.acceptanceRate).toBeGreaterThan(0);
    expect(b.speculative.meanDraftLength).toBeLessThanOrEqual(3);
    const neither = run(['--speculative']);
    expect(neither.status).not.toBe(0);
    expect(neither.stderr).toMatch(/--draft-layer N and --draft-exit FILE/);
  });

  test('adainfer bench --speculative: full depth and speculative alternating, measured and predicted speedup', () => {
    const r = spawnSync(process.execPath, [MAIN, 'bench', '-m', path.join(repoRoot(), 'models', 'adainfer-tinystories-10L-ee.f16.gguf'), '-t', '1', '-n', '16', '-r', '2', '--speculative', '--draft-layer', '6', '--json'], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(r.status).toBe(0);
    const b = JSON.parse(r.stdout);
    expect(b.full.samples).toHaveLength(2);
    expect(b.speculative.samples).toHaveLength(2);
    expect(b.speedup).toBeCloseTo(b.speculative.mean / b.full.mean, 10);
    expect(b.predictedSpeedup).toBeGreaterThan(0);
    expect(b.acceptanceRate).toBeGreaterThanOrEqual(0);
    expect(b.acceptanceRate).toBeLessThanOrEqual(1);
  });
});
