/** The queue tests drive `adainfer` as users do: child processes (submitters, workers, status, collect). */
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { repoRoot } from '../helpers';

export const MAIN = path.join(repoRoot(), 'dist', 'lib', 'cli', 'main.js');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `adainfer ARGS` to its end (asynchronously: workers started beside it keep running). */
export function runCli(args: string[], timeoutMs = 180_000): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export class WorkerProcess {
  readonly child: ChildProcess;
  log = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private waiters: { re: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];

  constructor(url: string, extra: string[] = []) {
    this.child = spawn(process.execPath, [MAIN, 'worker', '--queue', url, '--threads', '1', '--stall-interval', '2000', ...extra], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child.stderr!.on('data', (d) => {
      this.log += d;
      this.waiters = this.waiters.filter((w) => {
        const m = this.log.match(w.re);
        if (m) w.resolve(m);
        return !m;
      });
    });
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve({ code, signal })));
  }

  /** Resolves when the log matches `re` (a global regex: all its matches so far count, see `count`). */
  waitFor(re: RegExp, timeoutMs = 120_000): Promise<RegExpMatchArray> {
    const m = this.log.match(re);
    if (m) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`worker log never matched ${re}:\n${this.log}`)), timeoutMs);
      this.waiters.push({
        re,
        resolve: (x) => {
          clearTimeout(timer);
          resolve(x);
        },
      });
    });
  }

  kill(signal: NodeJS.Signals): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
  }
}

export function readJsonl<T>(file: string): T[] {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as T);
}

/** Polls `batch status NAME --json` until the job is complete. */
export async function waitComplete(url: string, job: string, timeoutMs = 180_000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await runCli(['batch', 'status', job, '--queue', url, '--json']);
    if (r.code !== 0) throw new Error(`batch status failed: ${r.stderr}`);
    const s = JSON.parse(r.stdout) as { complete: boolean };
    if (s.complete) return s as Record<string, unknown>;
    if (Date.now() > deadline) throw new Error(`job ${job} not complete: ${r.stdout}`);
    await new Promise((res) => setTimeout(res, 500));
  }
}

/** What a record says about its generation, in either output shape (OpenAI batch output, adainfer's own). */
export interface Generated {
  text: string;
  tokens: number[];
  exitLayers: number[];
  stopReason: string;
}

export function generated(r: Record<string, any>): Generated {
  if ('custom_id' in r) {
    const body = r.response.body;
    return { text: body.choices[0].text, tokens: body.adainfer.tokens, exitLayers: body.adainfer.exitLayers, stopReason: body.adainfer.stopReason };
  }
  return { text: r.text, tokens: r.tokens, exitLayers: r.exitLayers, stopReason: r.stopReason };
}

export const requestId = (r: Record<string, unknown>): unknown => ('custom_id' in r ? r.custom_id : r.id);
