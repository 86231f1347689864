/**
 * `adainfer batch` as a child process: input checks, resuming (records already in --out are skipped, a torn
 * last line is cut off), and a job killed with SIGKILL mid-run then restarted, which must write every record
 * exactly once.
 */
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { repoRoot, tmpDir } from '../helpers';

const MAIN = path.join(repoRoot(), 'dist', 'lib', 'cli', 'main.js');
const dir = tmpDir('adainfer-batch-cli-');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const STARTS = ['Once upon a time', 'The little dog', 'Lily wanted', 'Tom and Sam were', 'One day, a cat', 'The sun was', 'Mom said', 'A big bird'];

function writeInput(name: string, n: number, extra: (i: number) => object = () => ({})): string {
  const file = path.join(dir, name);
  const lines = Array.from({ length: n }, (_, i) => JSON.stringify({ id: `p${i}`, prompt: `${STARTS[i % STARTS.length]} ${i}`, ...extra(i) }));
  fs.writeFileSync(file, lines.join('\n') + '\n');
  return file;
}

function cli(args: string[]): { code: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, 'batch', '--threads', '1', ...args], { encoding: 'utf8', timeout: 300_000 });
  return { code: r.status, stderr: r.stderr };
}

interface Rec {
  id: string;
  text: string;
  tokens: number[];
  exitLayers: number[];
  timings: Record<string, number>;
  stopReason: string;
}

function readRecords(file: string): Rec[] {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Rec);
}

const content = (r: Rec) => ({ id: r.id, text: r.text, tokens: r.tokens, exitLayers: r.exitLayers, stopReason: r.stopReason });

describe('adainfer batch', () => {
  test('writes one record per input line with text, tokens, exit layers and timings', () => {
    const input = writeInput('small.jsonl', 10, (i) => (i === 3 ? { maxTokens: 2 } : {}));
    const out = path.join(dir, 'small.out.jsonl');
    const r = cli(['--in', input, '--out', out, '--max-tokens', '8', '--batch-size', '3', '--seed', '4']);
    expect(r.code).toBe(0);
    const recs = readRecords(out);
    expect(recs.map((x) => x.id).sort()).toEqual(Array.from({ length: 10 }, (_, i) => `p${i}`).sort());
    for (const x of recs) {
      expect(typeof x.text).toBe('string');
      expect(x.exitLayers).toHaveLength(x.tokens.length);
      expect(x.tokens.length).toBeLessThanOrEqual(x.id === 'p3' ? 2 : 8);
      expect(x.timings).toEqual(expect.objectContaining({ prefillMs: expect.any(Number), decodeMs: expect.any(Number) }));
    }
    // rerun: nothing left to do, nothing written
    const again = cli(['--in', input, '--out', out, '--max-tokens', '8', '--batch-size', '3', '--seed', '4']);
    expect(again.code).toBe(0);
    expect(again.stderr).toMatch(/all 10 records are already/);
    expect(readRecords(out)).toHaveLength(10);
  });

  test('--speculative: every record is the full-depth greedy record, with how its drafts went; bad combinations refused', () => {
    const input = writeInput('spec.jsonl', 6);
    const plain = path.join(dir, 'spec.plain.jsonl');
    const spec = path.join(dir, 'spec.spec.jsonl');
    const common = ['--in', input, '--max-tokens', '24', '--batch-size', '3', '--temp', '0'];
    expect(cli([...common, '--out', plain]).code).toBe(0);
    const r = cli([...common, '--out', spec, '--speculative', '--draft-layer', '3', '--max-draft', '4']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/speculative: \d+ drafted, acceptance [\d.]+%, layers computed per token/);
    const byId = (recs: Rec[]) => Object.fromEntries(recs.map((x) => [x.id, x]));
    const want = byId(readRecords(plain));
    const got = readRecords(spec);
    expect(got).toHaveLength(6);
    for (const x of got) {
      expect(content(x)).toEqual(content(want[x.id]));
      const s = (x as Rec & { speculative: { drafted: number; accepted: number } }).speculative;
      expect(s.accepted).toBeLessThanOrEqual(s.drafted);
    }
    expect(cli([...common, '--out', path.join(dir, 'x.jsonl'), '--speculative']).stderr).toMatch(/needs one of --draft-layer N and --draft-exit FILE/);
    expect(cli([...common, '--out', path.join(dir, 'x.jsonl'), '--draft-layer', '3']).stderr).toMatch(/need --speculative/);
    expect(cli([...common, '--out', path.join(dir, 'x.jsonl'), '--speculative', '--draft-layer', '3', '--exit', 'auto']).stderr).toMatch(/cannot be combined with --speculative/);
  });

  test('bad input: the line number, duplicate ids by name, bad options', () => {
    const bad = path.join(dir, 'bad.jsonl');
    fs.writeFileSync(bad, '{"id":"a","prompt":"x"}\n\n{"id":"b","prompt":\n');
    let r = cli(['--in', bad, '--out', path.join(dir, 'bad.out')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/DATA_FILE.*line 3: not valid JSON/);
    fs.writeFileSync(bad, '{"id":"a","prompt":"x"}\n{"id":"b"}\n');
    expect(cli(['--in', bad, '--out', path.join(dir, 'bad.out')]).stderr).toMatch(/line 2: "prompt" must be a string/);
    fs.writeFileSync(bad, '{"id":"a","prompt":"x","maxTokens":-1}\n');
    expect(cli(['--in', bad, '--out', path.join(dir, 'bad.out')]).stderr).toMatch(/line 1: "maxTokens"/);
    fs.writeFileSync(bad, ['a', 'b', 'a', 'c', 'b', 'a'].map((id) => JSON.stringify({ id, prompt: 'x' })).join('\n'));
    r = cli(['--in', bad, '--out', path.join(dir, 'bad.out')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/duplicate ids: "a" \(lines 1, 3, 6\); "b" \(lines 2, 5\)/);
    const ok = writeInput('ok.jsonl', 2);
    r = cli(['--in', ok, '--out', path.join(dir, 'ok.out'), '--kv-fill', 'recompute']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/single-sequence only/);
    r = cli(['--in', ok, '--out', path.join(dir, 'bad.out'), '--exit', path.join(dir, 'missing-exit.json')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/EXIT_FILE/);
    expect(fs.existsSync(path.join(dir, 'bad.out'))).toBe(false);
  });

  test('resume: a torn last line is cut off and its prompt runs again; records equal an uninterrupted run', () => {
    const input = writeInput('resume.jsonl', 12);
    const args = ['--max-tokens', '10', '--batch-size', '3', '--seed', '9', '--temp', '0.8'];
    const refOut = path.join(dir, 'resume.ref.jsonl');
    expect(cli(['--in', input, '--out', refOut, ...args]).code).toBe(0);
    const ref = new Map(readRecords(refOut).map((x) => [x.id, content(x)]));
    const lines = fs.readFileSync(refOut, 'utf8').split('\n').filter(Boolean);

    // four whole records and half of the fifth
    const out = path.join(dir, 'resume.out.jsonl');
    fs.writeFileSync(out, lines.slice(0, 4).join('\n') + '\n' + lines[4].slice(0, Math.floor(lines[4].length / 2)));
    let r = cli(['--in', input, '--out', out, ...args]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/dropped a torn last line/);
    expect(r.stderr).toMatch(/8 record\(s\) written .* \(4 already there\)/);
    let recs = readRecords(out);
    expect(recs).toHaveLength(12);
    expect(new Set(recs.map((x) => x.id)).size).toBe(12);
    for (const x of recs) expect(content(x)).toEqual(ref.get(x.id));

    // a whole last record without its newline is kept, and the next record starts on a new line
    fs.writeFileSync(out, lines.slice(0, 5).join('\n'));
    r = cli(['--in', input, '--out', out, ...args]);
    expect(r.code).toBe(0);
    recs = readRecords(out);
    expect(recs).toHaveLength(12);
    for (const x of recs) expect(content(x)).toEqual(ref.get(x.id));

    // an unparsable line that is not the last is an error naming it
    fs.writeFileSync(out, [lines[0], '{"id": "p1", "te', lines[2]].join('\n') + '\n');
    r = cli(['--in', input, '--out', out, ...args]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/line 2 is not a result record/);
  });

  test('a job killed with SIGKILL mid-run and restarted writes each record exactly once', async () => {
    const n = 2000;
    const input = writeInput('kill.jsonl', n);
    const out = path.join(dir, 'kill.out.jsonl');
    const args = ['--in', input, '--out', out, '--max-tokens', '16', '--batch-size', '8', '--temp', '0'];
    const child = spawn(process.execPath, [MAIN, 'batch', '--threads', '1', ...args], { stdio: 'ignore' });
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    const count = () => (fs.existsSync(out) ? fs.readFileSync(out, 'utf8').split('\n').length - 1 : 0);
    const deadline = Date.now() + 120_000;
    while (count() < 20 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    child.kill('SIGKILL');
    await exited;
    const before = count();
    expect(before).toBeGreaterThanOrEqual(20);
    expect(before).toBeLessThan(n); // killed mid-run

    const r = cli(args);
    expect(r.code).toBe(0);
    const recs = readRecords(out);
    expect(recs).toHaveLength(n);
    const ids = recs.map((x) => x.id);
    expect(new Set(ids).size).toBe(n);
    expect(new Set(ids)).toEqual(new Set(Array.from({ length: n }, (_, i) => `p${i}`)));

    // greedy: a record depends on its prompt only; a few against a fresh run of the same lines
    const pick = [0, 1, 7, 500, 1999];
    const sub = path.join(dir, 'kill.sub.jsonl');
    const inputLines = fs.readFileSync(input, 'utf8').split('\n');
    fs.writeFileSync(sub, pick.map((i) => inputLines[i]).join('\n') + '\n');
    const subOut = path.join(dir, 'kill.sub.out.jsonl');
    expect(cli(['--in', sub, '--out', subOut, '--max-tokens', '16', '--batch-size', '8', '--temp', '0']).code).toBe(0);
    const byId = new Map(recs.map((x) => [x.id, content(x)]));
    for (const x of readRecords(subOut)) expect(content(x)).toEqual(byId.get(x.id));
  }, 300_000);
});
