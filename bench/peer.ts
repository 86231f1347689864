/**
 * The reference engine of the benchmarks: node-llama-cpp (which wraps llama.cpp), pinned, CPU only.
 *
 * It is never a dependency of adainfer: the first benchmark run installs it into bench/.peer (git-ignored)
 * with `npm install --prefix bench/.peer --no-save node-llama-cpp@<pinned>`; its prebuilt llama.cpp binaries
 * come as npm packages, so nothing is downloaded from elsewhere or compiled (getLlama runs with
 * build: 'never' and skipDownload: true, and fails clearly if no prebuilt binary fits this machine).
 *
 * node-llama-cpp is ESM-only; this file is compiled to CommonJS, so it is loaded with a real dynamic
 * import() that tsc cannot rewrite into require() (see importEsm).
 *
 * Measurement (LlamaCppRunner.bench), per rep:
 *   prefill = sequence.evaluateWithoutGeneratingNewTokens(promptTokens)   (one llama_decode of the prompt)
 *   decode  = sequence.evaluate([first], { temperature: 0 }) iterated genTokens times (greedy, one token per
 *             llama_decode), stopped after genTokens tokens
 *   then sequence.clearHistory() (not timed).
 * Both phases are wall-clock times seen from JavaScript (what a Node.js user of node-llama-cpp gets). The
 * same runs are also timed by llama.cpp's own counters (llama_perf_context: time inside llama_decode),
 * read back from printTimings(), so the cost of node-llama-cpp's JS layer can be told apart from llama.cpp's.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { pathToFileURL } from 'url';
import { repoRoot } from './machine';

export const NODE_LLAMA_CPP_VERSION = '3.21.1';

export type Log = (message: string) => void;

// ---------------------------------------------------------------------------------------------------
// The parts of node-llama-cpp's API used here (its own .d.ts files are not visible to this project's tsc).

type Token = number;
type NlcLogLevel = 'disabled' | 'fatal' | 'error' | 'warn' | 'info' | 'log' | 'debug';

interface NlcModule {
  getLlama(options: Record<string, unknown>): Promise<NlcLlama>;
}

interface NlcLlama {
  readonly gpu: string | false;
  readonly buildType: string;
  readonly systemInfo: string;
  readonly cpuMathCores: number;
  readonly llamaCppRelease: { repo: string; release: string };
  loadModel(options: Record<string, unknown>): Promise<NlcModel>;
  dispose(): Promise<void>;
}

interface NlcModel {
  readonly size: number;
  readonly trainContextSize: number;
  readonly fileInfo: { version: number };
  createContext(options: Record<string, unknown>): Promise<NlcContext>;
  dispose(): Promise<void>;
}

interface NlcContext {
  readonly contextSize: number;
  readonly batchSize: number;
  readonly currentThreads: number;
  readonly flashAttention: boolean | string;
  getSequence(): NlcSequence;
  printTimings(): Promise<void> | void;
  dispose(): Promise<void>;
}

interface NlcSequence {
  readonly nextTokenIndex: number;
  clearHistory(): Promise<void>;
  evaluateWithoutGeneratingNewTokens(tokens: Token[]): Promise<void>;
  evaluate(tokens: Token[], options?: Record<string, unknown>): AsyncGenerator<Token, void, void | Token | Token[]>;
  controlledEvaluate(
    input: Array<Token | [Token, Record<string, unknown>]>,
  ): Promise<Array<undefined | { next: { token?: Token | null; probabilities?: Map<Token, number> } }>>;
}

// ---------------------------------------------------------------------------------------------------
// Install on demand

/** bench/.peer: the private npm prefix that holds node-llama-cpp (git-ignored). */
export function peerPrefix(): string {
  return path.join(repoRoot(), 'bench', '.peer');
}

function peerPackageDir(): string {
  return path.join(peerPrefix(), 'node_modules', 'node-llama-cpp');
}

/** The installed node-llama-cpp version in bench/.peer, or undefined. */
export function installedPeerVersion(): string | undefined {
  try {
    return (JSON.parse(fs.readFileSync(path.join(peerPackageDir(), 'package.json'), 'utf8')) as { version?: string }).version;
  } catch {
    return undefined;
  }
}

/**
 * Makes sure node-llama-cpp@NODE_LLAMA_CPP_VERSION is in bench/.peer, installing it (once) from the npm
 * registry if it is not. npm's output goes to stderr so that a --json report on stdout stays clean.
 * Returns the package directory.
 */
export function ensureNodeLlamaCpp(log: Log = (m) => process.stderr.write(m + '\n')): string {
  const installed = installedPeerVersion();
  if (installed === NODE_LLAMA_CPP_VERSION) return peerPackageDir();
  const prefix = peerPrefix();
  const what = installed ? `replacing node-llama-cpp@${installed} with` : 'installing';
  log(
    `[bench] ${what} node-llama-cpp@${NODE_LLAMA_CPP_VERSION} into ${path.relative(process.cwd(), prefix) || prefix} ` +
      `(first run only; it is not a dependency of adainfer; npm fetches its prebuilt binaries, several hundred MB)...`,
  );
  const args = ['install', '--prefix', prefix, '--no-save', '--no-audit', '--no-fund', `node-llama-cpp@${NODE_LLAMA_CPP_VERSION}`];
  const t0 = Date.now();
  const r = spawnSync(process.platform === 'win32' ? 'npm.cmd' : 'npm', args, {
    stdio: ['ignore', 2, 2],
    // node-llama-cpp's postinstall would otherwise try to download/build llama.cpp when no prebuilt binary fits.
    env: { ...process.env, NODE_LLAMA_CPP_POSTINSTALL: 'skip', NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true' },
  });
  if (r.error) throw new Error(`could not run npm to install node-llama-cpp: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`\`npm ${args.join(' ')}\` failed with exit code ${r.status}`);
  const now = installedPeerVersion();
  if (now !== NODE_LLAMA_CPP_VERSION) throw new Error(`after npm install, bench/.peer holds node-llama-cpp ${now ?? '(nothing)'}`);
  log(`[bench] node-llama-cpp@${NODE_LLAMA_CPP_VERSION} installed in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  return peerPackageDir();
}

/** import() that survives compilation to CommonJS (tsc would turn a literal import() into require()). */
const importEsm = new Function('p', 'return import(p)') as (specifier: string) => Promise<unknown>;

async function importNodeLlamaCpp(packageDir: string): Promise<NlcModule> {
  const pkg = JSON.parse(fs.readFileSync(path.join(packageDir, 'package.json'), 'utf8')) as {
    exports?: { '.'?: { import?: string; default?: string } };
    main?: string;
  };
  const entry = pkg.exports?.['.']?.import ?? pkg.exports?.['.']?.default ?? pkg.main ?? 'dist/index.js';
  return (await importEsm(pathToFileURL(path.join(packageDir, entry)).href)) as NlcModule;
}

// ---------------------------------------------------------------------------------------------------
// Engine

export interface PeerInfo {
  nodeLlamaCpp: string;
  llamaCpp: string;
  buildType: string;
  gpu: string | false;
  /** llama.cpp's system_info line (the CPU features its CPU backend was built for). */
  systemInfo: string;
  /** ggml CPU backend variant actually loaded (libggml-cpu-<variant>.so), when it can be told. */
  cpuBackend: string | undefined;
}

/** llama.cpp's own counters (llama_perf_context) for one rep: time spent inside llama_decode. */
export interface CoreTimes {
  prefillMs: number;
  prefillTokens: number;
  decodeMs: number;
  decodeRuns: number;
}

export interface PeerBenchResult {
  prefillMs: number;
  decodeMs: number;
  promptTokens: number;
  genTokens: number;
  /** undefined when llama.cpp's timings could not be read. */
  core: CoreTimes | undefined;
}

interface PerfTotals {
  promptMs: number;
  promptTokens: number;
  evalMs: number;
  evalRuns: number;
}

export class LlamaCppPeer {
  /** llama.cpp log lines at warn level and above (e.g. "bad special token" for some GGUFs). */
  readonly warnings: string[] = [];
  private logLines: string[] = [];
  /** @internal What llama.cpp logged about flash attention for the last context it created. */
  lastFlashAttention: boolean | undefined;

  private constructor(
    private llama: NlcLlama | undefined,
    readonly info: PeerInfo,
  ) {}

  /** Installs node-llama-cpp if needed and starts llama.cpp's CPU backend (no GPU, no download, no build). */
  static async start(options: { log?: Log; install?: boolean } = {}): Promise<LlamaCppPeer> {
    const log = options.log ?? ((m: string) => process.stderr.write(m + '\n'));
    let dir = peerPackageDir();
    if (options.install === false) {
      if (installedPeerVersion() !== NODE_LLAMA_CPP_VERSION)
        throw new Error(`node-llama-cpp@${NODE_LLAMA_CPP_VERSION} is not installed in bench/.peer`);
    } else {
      dir = ensureNodeLlamaCpp(log);
    }
    const nlc = await importNodeLlamaCpp(dir);
    let peer: LlamaCppPeer | undefined;
    const pending: string[] = [];
    const logger = (level: NlcLogLevel, message: string) => {
      if (peer) peer.onLog(level, message);
      else pending.push(`${level}\t${message}`);
    };
    const llama = await nlc.getLlama({
      gpu: false,
      build: 'never',
      skipDownload: true,
      usePrebuiltBinaries: true,
      progressLogs: false,
      // info: needed for printTimings() (llama_perf_context_print logs at info level); the logger keeps it quiet.
      logLevel: 'info',
      logger,
      // 0 = no cap: the `threads` given to a context is then exactly the number of threads used.
      maxThreads: 0,
      vramPadding: 0,
    });
    if (llama.gpu !== false) throw new Error(`node-llama-cpp started with GPU '${llama.gpu}' although gpu: false was asked`);
    peer = new LlamaCppPeer(llama, {
      nodeLlamaCpp: installedPeerVersion() ?? '?',
      llamaCpp: `${llama.llamaCppRelease.repo}@${llama.llamaCppRelease.release}`,
      buildType: llama.buildType,
      gpu: llama.gpu,
      systemInfo: llama.systemInfo.trim(),
      cpuBackend: loadedCpuBackend(),
    });
    for (const p of pending) {
      const [level, message] = p.split('\t', 2);
      peer.onLog(level as NlcLogLevel, message);
    }
    return peer;
  }

  private onLog(level: NlcLogLevel, message: string): void {
    if (level === 'warn' || level === 'error' || level === 'fatal') this.warnings.push(message.trim());
    if (message.includes('llama_perf_context_print')) this.logLines.push(message);
    const fa = /Flash Attention (enabled|disabled)|flash_attn\s*=\s*(enabled|disabled|1|0|true|false)\b/i.exec(message);
    if (fa) this.lastFlashAttention = ['enabled', '1', 'true'].includes((fa[1] ?? fa[2]).toLowerCase());
  }

  async loadModel(modelPath: string): Promise<LlamaCppModel> {
    if (!this.llama) throw new Error('the node-llama-cpp peer has been disposed');
    const model = await this.llama.loadModel({ modelPath: path.resolve(modelPath), gpuLayers: 0, useMmap: true });
    // The CPU backend library is loaded lazily by some builds: look again once a model is loaded.
    if (!this.info.cpuBackend) this.info.cpuBackend = loadedCpuBackend();
    return new LlamaCppModel(this, model);
  }

  /** @internal Runs printTimings() and returns llama.cpp's cumulative counters for that context. */
  async readPerf(context: NlcContext): Promise<PerfTotals | undefined> {
    this.logLines = [];
    await context.printTimings();
    // Log lines come back through node-llama-cpp's logger, possibly a few ticks later.
    for (let i = 0; i < 200 && !this.logLines.some((l) => /total time/.test(l)); i++) await new Promise((r) => setImmediate(r));
    const text = this.logLines.join('\n');
    const prompt = /prompt eval time\s*=\s*([\d.]+)\s*ms\s*\/\s*(\d+)\s*tokens/.exec(text);
    const evalm = /(?:^|[^t])\s+eval time\s*=\s*([\d.]+)\s*ms\s*\/\s*(\d+)\s*runs/m.exec(text);
    if (!prompt || !evalm) return undefined;
    return { promptMs: Number(prompt[1]), promptTokens: Number(prompt[2]), evalMs: Number(evalm[1]), evalRuns: Number(evalm[2]) };
  }

  async dispose(): Promise<void> {
    const llama = this.llama;
    this.llama = undefined;
    await llama?.dispose();
  }
}

export class LlamaCppModel {
  constructor(
    private readonly peer: LlamaCppPeer,
    private model: NlcModel | undefined,
  ) {}

  get trainContextSize(): number {
    return this.live().trainContextSize;
  }

  private live(): NlcModel {
    if (!this.model) throw new Error('the node-llama-cpp model has been disposed');
    return this.model;
  }

  /**
   * One context with one sequence. `threads` is used exactly (maxThreads is 0); flash attention is left to
   * llama.cpp's default ('auto') unless given.
   */
  async createRunner(options: {
    contextSize: number;
    batchSize: number;
    threads: number;
    flashAttention?: boolean;
    /** K and V cache type (llama.cpp's default: F16). */
    kvCacheType?: 'F32' | 'F16';
  }): Promise<LlamaCppRunner> {
    this.peer.lastFlashAttention = undefined;
    const context = await this.live().createContext({
      ...(options.kvCacheType ? { experimentalKvCacheKeyType: options.kvCacheType, experimentalKvCacheValueType: options.kvCacheType } : {}),
      contextSize: options.contextSize,
      batchSize: options.batchSize,
      threads: options.threads,
      sequences: 1,
      flashAttention: options.flashAttention ?? 'auto',
      performanceTracking: true,
      failedCreationRemedy: false,
      ignoreMemorySafetyChecks: true,
    });
    // Let the context-creation log lines arrive, then note whether 'auto' flash attention was switched on.
    await new Promise((r) => setImmediate(r));
    return new LlamaCppRunner(this.peer, context, this.peer.lastFlashAttention);
  }

  async dispose(): Promise<void> {
    const m = this.model;
    this.model = undefined;
    await m?.dispose();
  }
}

export class LlamaCppRunner {
  private readonly sequence: NlcSequence;

  constructor(
    private readonly peer: LlamaCppPeer,
    private readonly context: NlcContext,
    private readonly resolvedFlashAttention: boolean | undefined,
  ) {
    this.sequence = context.getSequence();
  }

  get contextSize(): number {
    return this.context.contextSize;
  }
  get batchSize(): number {
    return this.context.batchSize;
  }
  get threads(): number {
    return this.context.currentThreads;
  }
  /** true/false as llama.cpp resolved it (from its log), or the option given ('auto') when it did not say. */
  get flashAttention(): boolean | string {
    return this.resolvedFlashAttention ?? this.context.flashAttention;
  }

  /**
   * Prefill `promptTokens` (one llama_decode when batchSize >= their count), then decode `genTokens` tokens
   * greedily, one llama_decode each; each phase timed on its own. The sequence is cleared before (not timed).
   */
  async bench(promptTokens: number[], genTokens: number): Promise<PeerBenchResult> {
    if (promptTokens.length < 1) throw new Error('the prompt needs at least one token');
    if (promptTokens.length + genTokens > this.context.contextSize)
      throw new Error(`prompt ${promptTokens.length} + gen ${genTokens} tokens exceed the context of ${this.context.contextSize}`);
    const seq = this.sequence;
    await seq.clearHistory();
    // A fresh reading right before the timed phases (it also resets the counters where printing does).
    const before = await this.peer.readPerf(this.context);

    const t0 = performance.now();
    await seq.evaluateWithoutGeneratingNewTokens(promptTokens);
    const t1 = performance.now();
    let n = 0;
    if (genTokens > 0) {
      // The first decode step feeds one more (prompt-like) token, as llama-bench's tg does; then each sampled
      // token is fed back. Leaving the loop stops the generator without another evaluation.
      for await (const token of seq.evaluate([promptTokens[promptTokens.length - 1]], { temperature: 0 })) {
        void token;
        if (++n >= genTokens) break;
      }
    }
    const t2 = performance.now();
    if (n !== genTokens) throw new Error(`node-llama-cpp generated ${n} of ${genTokens} tokens`);
    const expected = promptTokens.length + genTokens;
    if (seq.nextTokenIndex !== expected)
      throw new Error(`the sequence holds ${seq.nextTokenIndex} tokens after the rep, expected ${expected}`);

    const after = await this.peer.readPerf(this.context);
    // node-llama-cpp resets llama.cpp's counters when it prints them, so `after` normally covers exactly this
    // rep; a difference with the previous reading covers builds that do not reset. Anything else is dropped.
    let core: CoreTimes | undefined;
    const fits = (c: CoreTimes) => c.prefillTokens === promptTokens.length && c.decodeRuns === genTokens && c.prefillMs >= 0 && c.decodeMs >= 0;
    if (after) {
      const absolute = { prefillMs: after.promptMs, prefillTokens: after.promptTokens, decodeMs: after.evalMs, decodeRuns: after.evalRuns };
      const delta = before && {
        prefillMs: after.promptMs - before.promptMs,
        prefillTokens: after.promptTokens - before.promptTokens,
        decodeMs: after.evalMs - before.evalMs,
        decodeRuns: after.evalRuns - before.evalRuns,
      };
      core = fits(absolute) ? absolute : delta && fits(delta) ? delta : undefined;
    }
    return { prefillMs: t1 - t0, decodeMs: t2 - t1, promptTokens: promptTokens.length, genTokens, core };
  }

  /** Greedy continuation: evaluates `promptTokens` from an empty cache, then returns `n` greedily sampled tokens. */
  async greedy(promptTokens: number[], n: number): Promise<number[]> {
    const seq = this.sequence;
    await seq.clearHistory();
    const out: number[] = [];
    if (n <= 0) return out;
    for await (const token of seq.evaluate(promptTokens, { temperature: 0 })) {
      out.push(token);
      if (out.length >= n) break;
    }
    return out;
  }

  /**
   * The next-token distribution after every position of `tokens` (one llama_decode from an empty cache), as
   * log-probabilities [position][token]: llama.cpp's softmax of its logits at temperature 1 with no top-k/top-p/min-p
   * truncation, so they equal the logits minus each row's log-sum-exp (node-llama-cpp exposes no raw logits).
   * Tokens llama.cpp gives no probability are -Infinity.
   */
  async logProbs(tokens: number[], nVocab: number): Promise<Float64Array[]> {
    const seq = this.sequence;
    await seq.clearHistory();
    const options = { temperature: 1, topK: 0, topP: 1, minP: 0 };
    const out = await seq.controlledEvaluate(tokens.map((t) => [t, { generateNext: { probabilities: true, options } }] as [number, Record<string, unknown>]));
    return tokens.map((_, i) => {
      const probs = out[i]?.next.probabilities;
      if (!probs) throw new Error(`node-llama-cpp returned no probabilities for position ${i}`);
      const row = new Float64Array(nVocab).fill(-Infinity);
      for (const [id, p] of probs) row[id] = Math.log(p);
      return row;
    });
  }

  async dispose(): Promise<void> {
    await this.context.dispose();
  }
}

/** The ggml CPU backend variant mapped into this process (libggml-cpu-zen4.so -> "zen4"), Linux only. */
function loadedCpuBackend(): string | undefined {
  try {
    const maps = fs.readFileSync('/proc/self/maps', 'utf8');
    const found = new Set<string>();
    for (const m of maps.matchAll(/libggml-cpu(?:-([\w.-]+?))?\.so/g)) found.add(m[1] ?? 'cpu');
    return found.size ? [...found].join(', ') : undefined;
  } catch {
    return undefined;
  }
}
