/**
 * `adainfer bench --exit … [--speculative …]` (issue 16, point 2): the latency report validates against its
 * published schema (an Ajv of the test's own over docs/schemas/bench-latency.schema.json) and holds what it says
 * (one sample per request and per token gap, a histogram per layer summing to the tokens, full depth first);
 * bad option combinations are OptionErrors naming the option. Behaviour only: nothing here checks speed.
 */
import Ajv from 'ajv';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { LatencyReport, validateLatencyReport } from '../../lib/latency/report';
import { BUNDLED_MODEL, repoRoot, tmpDir } from '../helpers';

const MAIN = path.join(repoRoot(), 'dist', 'lib', 'cli', 'main.js');
const EXIT_FILE = path.join(repoRoot(), 'models', 'adainfer-tinystories-10L-ee.exit.json');

function cli(args: string[]) {
  return spawnSync(process.execPath, [MAIN, 'bench', ...args], { encoding: 'utf8', timeout: 120_000 });
}

function publishedValidator() {
  const schema = JSON.parse(fs.readFileSync(path.join(repoRoot(), 'docs', 'schemas', 'bench-latency.schema.json'), 'utf8'));
  return new Ajv({ allErrors: true, allowUnionTypes: true }).compile(schema);
}

describe('adainfer bench --exit: the latency report', () => {
  let report: LatencyReport;
  beforeAll(() => {
    const r = cli(['-m', BUNDLED_MODEL, '-t', '1', '-n', '6', '-r', '2', '--exit', 'auto', '--speculative', '--draft-layer', '4', '--max-draft', '3', '--json']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    report = JSON.parse(r.stdout);
  });

  test('validates against the published schema and the runtime checks', () => {
    const validate = publishedValidator();
    expect(validate(report) ? [] : validate.errors).toEqual([]);
    expect(validateLatencyReport(report)).toEqual([]);
  });

  test('full depth, the shipped exit file and speculative, each on every prompt and rep', () => {
    expect(report.arms.map((a) => a.arm)).toEqual(['full', 'exit', 'speculative']);
    expect(report.settings.exit).toEqual({ choice: 'auto', file: EXIT_FILE, source: 'auto' });
    expect(report.settings.speculative).toEqual({ draft: 'layer 4', maxDraft: 3 });
    const requests = report.settings.prompts.length * 2;
    for (const a of report.arms) {
      expect(a.requests).toBe(requests);
      expect(a.tokens).toBe(requests * 6);
      expect(a.samples.ttftMs).toHaveLength(requests);
      expect(a.samples.tokenMs).toHaveLength(requests * 5);
      expect(a.tokenMs.p50!).toBeLessThanOrEqual(a.tokenMs.p90!);
      expect(a.tokenMs.p90!).toBeLessThanOrEqual(a.tokenMs.p99!);
    }
    const [full, exit, spec] = report.arms;
    expect(full.layersPerToken).toBe(report.model.nLayer);
    expect(full.layerHistogram!.slice(0, -1).every((c) => c === 0)).toBe(true);
    expect(full.ratioToFull.layers).toBe(1);
    expect(full.tokenAgreement).toBe(1);
    expect(exit.layerHistogram!.reduce((a, b) => a + b, 0)).toBe(exit.tokens);
    const mean = exit.layerHistogram!.reduce((a, c, i) => a + c * (i + 1), 0) / exit.tokens;
    expect(exit.layersPerToken).toBeCloseTo(mean, 10);
    expect(exit.ratioToFull.layers).toBeCloseTo(mean / report.model.nLayer, 10);
    expect(spec.layerHistogram).toBeNull();
    expect(spec.tokenAgreement).toBe(1); // greedy speculative output is full depth's
    expect(spec.speculative!.meanDraftLength).toBeLessThanOrEqual(3);
  });

  test('a report that breaks its schema or its counts is named field by field', () => {
    const bad = JSON.parse(JSON.stringify(report));
    bad.arms[1].tokenAgreement = 1.5;
    expect(validateLatencyReport(bad)).toEqual(['arms[1].tokenAgreement must be a number in [0, 1]']);
    const short = JSON.parse(JSON.stringify(report));
    short.arms[0].samples.ttftMs.pop();
    expect(validateLatencyReport(short)).toEqual([`arms[0].samples.ttftMs has ${report.arms[0].requests - 1} entries, expected one per request (${report.arms[0].requests})`]);
  });

  test('--exit never --text: full depth alone on one prompt; readable table without --json', () => {
    const r = cli(['-m', BUNDLED_MODEL, '-t', '1', '-n', '3', '-r', '1', '--exit', 'never', '--text', 'Once upon a time', '--warmup', '0']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/1 prompt\(s\) x 1 reps, 3 tokens each/);
    expect(r.stdout).toMatch(/\| full depth/);
    expect(r.stdout).not.toMatch(/exit policy/);
  });
});

describe('adainfer bench: bad option combinations are OptionErrors naming the option', () => {
  const dir = tmpDir('adainfer-bench-latency-');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const empty = path.join(dir, 'empty.txt');
  fs.writeFileSync(empty, '\n\n');

  test.each<[string, string[], RegExp]>([
    ['-p with --exit', ['--exit', 'never', '-p', '16'], /invalid option -p: does not apply to the latency report/],
    ['-n below 2 with --exit', ['--exit', 'never', '-n', '1'], /invalid option -n: .*at least 2/],
    ['--prompts without --exit', ['--prompts', empty], /invalid option --prompts: belongs to the latency report/],
    ['--warmup without --exit', ['--warmup', '2'], /invalid option --warmup: belongs to the latency report/],
    ['--prompts with --text', ['--exit', 'never', '--prompts', empty, '--text', 'hi'], /invalid option --prompts: give either/],
    ['an empty prompts file', ['--exit', 'never', '--prompts', empty], /invalid option --prompts: .* holds no prompt/],
    ['a prompts file that is not there', ['--exit', 'never', '--prompts', path.join(dir, 'none.txt')], /invalid option --prompts: cannot read/],
    ['--speculative without a drafter', ['--exit', 'never', '--speculative'], /invalid option --speculative: needs one of/],
    ['--draft-layer without --speculative', ['--exit', 'never', '--draft-layer', '3'], /invalid option --draft-layer:/],
    ['-n beyond the context', ['--exit', 'never', '-n', '100000', '-r', '1'], /invalid option maxTokens: .*exceed the model's context/],
  ])('%s', (_name, args, message) => {
    const r = cli(['-m', BUNDLED_MODEL, '-t', '1', ...args]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^adainfer: error \[INVALID_OPTION\]: /);
    expect(r.stderr).toMatch(message);
  });

  test('an exit file made for another model is an EXIT_FILE error', () => {
    const other = path.join(repoRoot(), 'models', 'adainfer-tinystories-10L.exit.json');
    const r = cli(['-m', BUNDLED_MODEL, '-t', '1', '--exit', other]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/error \[EXIT_FILE\]/);
  });
});
