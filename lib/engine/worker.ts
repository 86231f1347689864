/**
 * The model worker: one worker thread per loaded model runs every heavy call (load, prompt processing,
 * decoding) so the caller's event loop never blocks. Sessions of one model share its mapped weights and
 * run one at a time on the worker, interleaved token by token.
 */
import { parentPort } from 'worker_threads';
import { AbortError, AdaInferError, OptionError, serializeError } from '../errors';
import { TransformerContext, TransformerModel } from '../model/transformer';
import { native } from '../bindings/native';
import { loadExitFile, policyFromExitFile } from '../exit/exit_file';
import { ExitDecider } from '../exit/decider';
import { ExitPolicy, thresholdPolicy, withLabelCandidates } from '../exit/policy';
import { labelTokensAfter, noSpaceTokenizer } from '../tasks/labels';
import { checkKnownOptions } from './options';
import {
  BenchRequest,
  BenchResult,
  ClassifyResult,
  ExitSpec,
  ModelInfo,
  Request,
  RequestMessage,
  ResponseMessage,
  THRESHOLD_SPEC_KEYS,
  SpeculativeSpec,
  WorkerClassifyOptions,
  WorkerGenerateOptions,
} from './protocol';
import { resolveSampling } from './sampling';
import { chatTemplateSource } from '../chat/model_template';
import { Sequence, SequenceResult, SpeculativeOptions, TokenEvent } from './sequence';
import { BatchExit, BatchPrompt, BatchSequenceResult, classifyBatch, generateBatch, OpenBatch } from './batch';
import { DEFAULT_FAST_TOP_K } from '../defaults';
import {
  BatchClassifyItem,
  BatchClassifyResult,
  BatchGenerateResult,
  BatchPromptSpec,
  WorkerBatchGenerateOptions,
  WorkerBatchOptions,
  WorkerBatchSubmitOptions,
  WorkerLoadOptions,
  WorkerOpenBatchOptions,
} from './protocol';

interface SessionState {
  context: TransformerContext;
  sequence: Sequence;
  busy: boolean;
}

let model: TransformerModel | undefined;
const sessions = new Map<number, SessionState>();

function post(message: ResponseMessage): void {
  parentPort!.postMessage(message);
}

function requireModel(): TransformerModel {
  if (!model) throw new AdaInferError('DISPOSED', 'the model is not loaded or has been disposed');
  return model;
}

function requireSession(id: number): SessionState {
  const s = sessions.get(id);
  if (!s) throw new AdaInferError('DISPOSED', 'the session has been disposed');
  return s;
}

function load(path: string, options: WorkerLoadOptions): ModelInfo {
  const t0 = performance.now();
  model = TransformerModel.load(path, options);
  const nativeInfo = model.native.info();
  const device = nativeInfo.backend === 'cuda' ? native().systemInfo().cuda.devices[options.device ?? 0]?.name : undefined;
  const c = model.config;
  return {
    path,
    name: c.name,
    architecture: c.architecture,
    fingerprint: model.fingerprint,
    fileType: model.fileType,
    contextLength: c.contextLength,
    nLayer: c.nLayer,
    nEmbd: c.nEmbd,
    nHead: c.nHead,
    nKvHead: c.nKvHead,
    nFf: c.nFf,
    nVocab: c.nVocab,
    parameters: model.parameters,
    weightBytes: model.weightBytes,
    kernels: nativeInfo.kernels,
    backend: nativeInfo.backend,
    device,
    deviceBytes: nativeInfo.deviceBytes,
    bosId: model.tokenizer.bosId,
    eosId: model.tokenizer.eosId,
    ...chatTemplateSource(model),
    loadMs: performance.now() - t0,
  };
}

function promptTokens(prompt: string | number[], options: { addBos?: boolean; parseSpecial?: boolean }): number[] {
  const m = requireModel();
  if (typeof prompt === 'string') return m.tokenizer.encode(prompt, { addSpecial: options.addBos ?? true, parseSpecial: options.parseSpecial ?? false });
  for (const t of prompt) {
    if (!Number.isInteger(t) || t < 0 || t >= m.config.nVocab)
      throw new OptionError('prompt', `token id ${String(t)} is outside the vocabulary [0, ${m.config.nVocab})`);
  }
  return prompt;
}

/**
 * Policies built from exit specs, by spec (an exit file is read and checked once). A server's requests name specs
 * freely (threshold values), so the oldest is forgotten beyond MAX_POLICIES (rebuilt if named again).
 */
const policies = new Map<string, ExitPolicy>();
const MAX_POLICIES = 256;

function policyFor(spec: ExitSpec | undefined): ExitPolicy | undefined {
  if (spec === undefined || spec === 'never') return undefined;
  const key = JSON.stringify(spec);
  let policy = policies.get(key);
  if (!policy) {
    const m = requireModel();
    if (typeof spec === 'string') {
      const file = loadExitFile(spec, { fingerprint: m.fingerprint, name: m.config.name, nLayer: m.config.nLayer });
      policy = policyFromExitFile(file);
    } else if (spec && typeof spec === 'object' && spec.kind === 'threshold') {
      checkKnownOptions(spec, THRESHOLD_SPEC_KEYS, 'a threshold exit spec');
      policy = thresholdPolicy(
        spec.feature,
        spec.value,
        { minLayer: spec.minLayer ?? 1, checkEvery: spec.checkEvery ?? 1 },
        { mode: spec.mode ?? 'faithful' },
      );
    } else {
      throw new OptionError('exit', `must be 'never', an exit file path or { kind: 'threshold', ... }, got ${JSON.stringify(spec)}`);
    }
    if (policies.size >= MAX_POLICIES) policies.delete(policies.keys().next().value!);
    policies.set(key, policy);
  }
  return policy;
}

/** A speculative drafter: a fixed depth as it is, an exit spec as its policy. */
function draftPolicy(draft: SpeculativeSpec['draft']): { layer: number } | ExitPolicy {
  if (typeof draft === 'object' && 'layer' in draft) return draft;
  const policy = draft === ('never' as string) ? undefined : policyFor(draft);
  if (!policy) throw new OptionError('speculative', "draft must be { layer: n }, an exit file path or a threshold spec, not 'never'");
  return policy;
}

/** Speculative options as the engine takes them: the drafter resolved (draftPolicy). */
function engineSpeculation(spec: SpeculativeSpec | undefined): SpeculativeOptions | undefined {
  return spec && { ...spec, draft: draftPolicy(spec.draft) };
}

/** The drafter's exit policy, if it is one (its fast lens sizes a batch's lens buffer). */
function draftExitPolicy(spec: SpeculativeOptions | undefined): ExitPolicy | undefined {
  return spec && !('layer' in spec.draft) ? spec.draft : undefined;
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Set by 'dispose'. Generations and batches in flight check it before each step, so they end (DISPOSED)
 * without another native call; 'dispose' waits for them before it frees anything and answers. After that
 * answer the main thread terminates this worker, and a native call that throws while the worker is being
 * terminated aborts the whole process (node-addon-api cannot throw into a terminating environment).
 */
let closing = false;
const inflight = new Set<Promise<unknown>>();

function checkOpen(): void {
  if (closing) throw new AdaInferError('DISPOSED', 'the model has been disposed');
}

async function generate(id: number, sessionId: number, prompt: string | number[], options: WorkerGenerateOptions, abort: SharedArrayBuffer): Promise<SequenceResult> {
  const s = requireSession(sessionId);
  if (s.busy) throw new AdaInferError('BUSY', 'the session is already generating; wait for it or use another session');
  s.busy = true;
  try {
    const abortFlag = new Int32Array(abort);
    const tokens = promptTokens(prompt, options);
    const sampling = resolveSampling(options);
    const policy = policyFor(options.exit);
    const run = s.sequence.generate(tokens, {
      maxTokens: options.maxTokens,
      sampling,
      stopAtEos: options.stopAtEos,
      stop: options.stop,
      aborted: () => Atomics.load(abortFlag, 0) !== 0,
      exit: policy && new ExitDecider(s.context, policy),
      speculative: engineSpeculation(options.speculative),
    });
    for (;;) {
      checkOpen();
      const step = run.next();
      if (step.done) return step.value;
      if (step.value) post({ id, kind: 'token', event: step.value });
      // Let other sessions' requests in between tokens, and between the chunks of a long prompt.
      await yieldToEventLoop();
    }
  } finally {
    s.busy = false;
  }
}

let noSpace: ReturnType<typeof noSpaceTokenizer> | undefined;

/**
 * The prompt's tokens and the token each label is scored by: its first token after the prompt's tokens (so a
 * leading space folds in as the tokenizer does it, and a prompt whose end the tokenizer would merge with the label
 * is followed by the label's own tokens: lib/tasks/labels.ts). `where` names the prompt in errors.
 */
function promptAndLabelTokens(prompt: string | number[], labels: string[], addBos: boolean | undefined, where = ''): { tokens: number[]; labelTokens: number[] } {
  const m = requireModel();
  const tokens = promptTokens(prompt, { addBos });
  noSpace ??= noSpaceTokenizer(m);
  const labelTokens = labels.map((label) => {
    if (typeof prompt !== 'string') return m.tokenizer.encode(label, { addSpecial: false })[0];
    return labelTokensAfter(m.tokenizer, noSpace!, prompt, tokens, label, addBos ?? true).tokens[0];
  });
  if (new Set(labelTokens).size !== labelTokens.length)
    throw new OptionError('labels', `${where}two labels start with the same token (${labelTokens.join(', ')}); they cannot be told apart`);
  return { tokens, labelTokens };
}

/**
 * Scores each label by its first token after the prompt; fast-mode lenses use the label tokens as candidates.
 * Yields between prompt chunks (other sessions run meanwhile); the abort flag is read between layers.
 */
async function classify(sessionId: number, prompt: string | number[], labels: string[], options: WorkerClassifyOptions, abort: SharedArrayBuffer): Promise<ClassifyResult> {
  const s = requireSession(sessionId);
  if (s.busy) throw new AdaInferError('BUSY', 'the session is generating; wait for it or use another session');
  s.busy = true;
  try {
    const { tokens, labelTokens } = promptAndLabelTokens(prompt, labels, options.addBos);
    const policy = withLabelCandidates(policyFor(options.exit), labelTokens);
    const flag = new Int32Array(abort);
    const run = s.sequence.classifySteps(tokens, labelTokens, policy && new ExitDecider(s.context, policy), () => Atomics.load(flag, 0) !== 0);
    for (;;) {
      checkOpen();
      const step = run.next();
      if (step.done) {
        const r = step.value;
        return { index: r.index, label: labels[r.index], probs: r.probs, exitLayer: r.layers, labelTokens };
      }
      await yieldToEventLoop();
    }
  } finally {
    s.busy = false;
  }
}

/** llama-bench style: prefill `promptTokens` random tokens, then decode `genTokens` one by one. */
function bench(sessionId: number, r: BenchRequest): BenchResult {
  const s = requireSession(sessionId);
  const m = requireModel();
  const ctx = s.context;
  if (r.promptTokens + r.genTokens > ctx.contextSize)
    throw new OptionError('bench', `prompt ${r.promptTokens} + gen ${r.genTokens} tokens exceed the context of ${ctx.contextSize}`);
  let x = r.seed >>> 0 || 1;
  const random = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % m.config.nVocab;
  };
  s.sequence.reset();
  const t0 = performance.now();
  let pos = 0;
  for (let start = 0; start < r.promptTokens; start += ctx.batchSize) {
    const n = Math.min(ctx.batchSize, r.promptTokens - start);
    for (let i = 0; i < n; i++) ctx.native.tokens[i] = random();
    ctx.forward(n, pos);
    pos += n;
  }
  if (r.promptTokens > 0) ctx.logits(0);
  const t1 = performance.now();
  for (let i = 0; i < r.genTokens; i++) {
    ctx.native.tokens[0] = random();
    ctx.forward(1, pos++);
    ctx.logits(0);
  }
  const t2 = performance.now();
  return { prefillMs: t1 - t0, decodeMs: t2 - t1, promptTokens: r.promptTokens, genTokens: r.genTokens };
}

async function handle(msg: RequestMessage): Promise<unknown> {
  const req: Request = msg;
  switch (req.op) {
    case 'load':
      return load(req.path, req.options);
    case 'tokenize':
      return requireModel().tokenizer.encode(req.text, { addSpecial: req.addSpecial, parseSpecial: req.parseSpecial });
    case 'detokenize':
      return requireModel().tokenizer.decode(req.tokens);
    case 'createSession': {
      const context = requireModel().createContext(req.options);
      try {
        sessions.set(req.sessionId, { context, sequence: new Sequence(context, req.options.kvFill), busy: false });
      } catch (e) {
        context.dispose();
        throw e;
      }
      return null;
    }
    case 'generate':
      return generate(msg.id, req.sessionId, req.prompt, req.options, req.abort);
    case 'classify':
      return classify(req.sessionId, req.prompt, req.labels, req.options, req.abort);
    case 'bench':
      return bench(req.sessionId, req.request);
    case 'generateBatch':
      return generateBatchOp(msg.id, req.prompts, req.options, req.abort);
    case 'classifyBatch':
      return classifyBatchOp(msg.id, req.prompts, req.labels, req.options, req.abort);
    case 'openBatch':
      return openBatchOp(req.batchId, req.options);
    case 'batchSubmit':
      return batchSubmitOp(msg.id, req.batchId, req.prompt, req.options, req.abort);
    case 'closeBatch':
      return closeBatchOp(req.batchId);
    case 'disposeSession': {
      const s = sessions.get(req.sessionId);
      if (s?.busy) throw new AdaInferError('BUSY', 'the session is generating; abort it before disposing');
      s?.context.dispose();
      sessions.delete(req.sessionId);
      return null;
    }
    case 'dispose':
      closing = true;
      for (const b of openBatches.values()) b.wake?.(); // an idle open batch sees `closing` and ends

      await Promise.allSettled([...inflight]);
      for (const s of sessions.values()) s.context.dispose();
      sessions.clear();
      model?.dispose();
      model = undefined;
      return null;
  }
}

// --- batches (lib/engine/batch.ts): a context with one KV cache slot per sequence, made for each request ----

/** Exit files for batches, by path: each batch slot builds its own policy from the file (CRF state is per slot). */
const batchExitFiles = new Map<string, ReturnType<typeof loadExitFile>>();

function batchExitFor(spec: ExitSpec | undefined): BatchExit | undefined {
  if (spec === undefined || spec === 'never') return undefined;
  if (typeof spec !== 'string') return policyFor(spec); // threshold: stateless, shared by the slots
  let file = batchExitFiles.get(spec);
  if (!file) {
    const m = requireModel();
    file = loadExitFile(spec, { fingerprint: m.fingerprint, name: m.config.name, nLayer: m.config.nLayer });
    batchExitFiles.set(spec, file);
  }
  const f = file;
  return () => policyFromExitFile(f);
}

/**
 * A batch context: `slots` sequences (+1 scratch slot without compaction), rows for the decode rows plus prompt
 * chunks of 512 (lib/engine/batch.ts), and a lens buffer of `lensK` entries (batchLensK).
 */
function batchContext(o: { threads: number; compaction?: boolean }, slots: number, contextSize: number, lensK: number): TransformerContext {
  return requireModel().createContext({
    contextSize,
    sequences: slots + (o.compaction === false ? 1 : 0),
    batchSize: slots + 512,
    threads: o.threads,
    lensK,
  });
}

/** The largest fast-lens top-k any of `policies` asks, at least the default (the jsd feature's candidate set in faithful mode). */
function batchLensK(policies: (ExitPolicy | undefined)[]): number {
  return Math.max(DEFAULT_FAST_TOP_K, ...policies.map(lensTopK));
}

/** A batch's exit as the policy of one sequence (a factory makes one per sequence; the first stands for all). */
function samplePolicy(exit: BatchExit | undefined): ExitPolicy | undefined {
  return typeof exit === 'function' ? exit() : exit;
}

async function drive<R>(gen: Generator<number[], R>): Promise<R> {
  for (;;) {
    checkOpen();
    const step = gen.next();
    if (step.done) return step.value;
    await yieldToEventLoop(); // let other sessions' requests in between steps
  }
}

async function generateBatchOp(id: number, specs: BatchPromptSpec[], o: WorkerBatchGenerateOptions, abort: SharedArrayBuffer): Promise<BatchGenerateResult> {
  const m = requireModel();
  const sampling = resolveSampling(o);
  const prompts: BatchPrompt[] = specs.map((spec) => {
    const item = typeof spec === 'string' || Array.isArray(spec) ? { prompt: spec } : spec;
    return { tokens: promptTokens(item.prompt, { addBos: o.addBos, parseSpecial: o.parseSpecial }), maxTokens: item.maxTokens, seed: item.seed };
  });
  const need = prompts.reduce((a, p) => Math.max(a, p.tokens.length + (p.maxTokens ?? o.maxTokens)), 1);
  const contextSize = o.contextSize ?? Math.min(need, m.config.contextLength);
  const exit = batchExitFor(o.exit);
  const speculative = engineSpeculation(o.speculative);
  const ctx = batchContext(o, Math.max(1, Math.min(o.batchSize, prompts.length)), contextSize, batchLensK([samplePolicy(exit), draftExitPolicy(speculative)]));
  const flag = new Int32Array(abort);
  try {
    const gen = generateBatch(
      ctx,
      prompts,
      {
        maxTokens: o.maxTokens,
        sampling,
        stopAtEos: o.stopAtEos,
        stop: o.stop,
        exit,
        kvFill: o.kvFill,
        compaction: o.compaction,
        speculative,
        aborted: () => Atomics.load(flag, 0) !== 0,
      },
      (result) => post({ id, kind: 'batchResult', result }),
    );
    return await drive(gen);
  } finally {
    ctx.dispose();
  }
}

async function classifyBatchOp(
  id: number,
  specs: (string | number[])[],
  labels: string[],
  o: WorkerBatchOptions,
  abort: SharedArrayBuffer,
): Promise<BatchClassifyResult> {
  const m = requireModel();
  const prompts = specs.map((prompt, i) => promptAndLabelTokens(prompt, labels, o.addBos, `prompt ${i}: `));
  const contextSize = o.contextSize ?? Math.min(prompts.reduce((a, p) => Math.max(a, p.tokens.length), 1), m.config.contextLength);
  const exit = batchExitFor(o.exit);
  const ctx = batchContext(o, Math.max(1, Math.min(o.batchSize, prompts.length)), contextSize, batchLensK([samplePolicy(exit)]));
  const flag = new Int32Array(abort);
  const item = (r: { index: number; label: number; probs: number[]; exitLayer: number; timings: BatchClassifyItem['timings'] }): BatchClassifyItem => ({
    promptIndex: r.index,
    index: r.label,
    label: labels[r.label],
    probs: r.probs,
    exitLayer: r.exitLayer,
    labelTokens: prompts[r.index].labelTokens,
    timings: r.timings,
  });
  try {
    const gen = classifyBatch(ctx, prompts, { exit, compaction: o.compaction, aborted: () => Atomics.load(flag, 0) !== 0 }, (r) =>
      post({ id, kind: 'batchResult', result: item(r) }),
    );
    const run = await drive(gen);
    return { results: run.results.map(item), stats: run.stats };
  } finally {
    ctx.dispose();
  }
}

// --- open batches: one long-running OpenBatch per request of 'openBatch', fed by 'batchSubmit' ----------------

interface OpenBatchState {
  batch: OpenBatch;
  /** The fast-lens top-k the context's lens buffer holds. */
  lensK: number;
  /** Submissions not yet answered, by message id. */
  pending: Map<number, { resolve: (r: BatchSequenceResult) => void; reject: (e: unknown) => void }>;
  /** Token events of the current step, sent together after it (one message per step instead of one per row). */
  outbox: { id: number; event: TokenEvent }[];
  /** Resolves the driver's wait while the batch is idle. */
  wake?: () => void;
  /** The driver: ends when the batch is closed and empty, or fails. */
  done: Promise<void>;
}

const openBatches = new Map<number, OpenBatchState>();

function requireOpenBatch(batchId: number): OpenBatchState {
  const b = openBatches.get(batchId);
  if (!b || b.batch.closed) throw new AdaInferError('DISPOSED', 'the batch is closed');
  return b;
}

/** The top-k a policy's fast lens asks of the context (0: none). */
function lensTopK(policy: ExitPolicy | undefined): number {
  return policy?.lens.mode === 'fast' && !policy.lens.candidates ? policy.lens.topK ?? DEFAULT_FAST_TOP_K : 0;
}

function openBatchOp(batchId: number, o: WorkerOpenBatchOptions): null {
  const lensK = batchLensK((o.exitFiles ?? []).map((f) => requestExit(f)?.()));
  const ctx = batchContext(o, o.slots, o.contextSize, lensK);
  let batch: OpenBatch;
  try {
    batch = new OpenBatch(ctx, { kvFill: o.kvFill, compaction: o.compaction });
  } catch (e) {
    ctx.dispose();
    throw e;
  }
  const state: OpenBatchState = { batch, lensK, pending: new Map(), outbox: [], done: Promise.resolve() };
  state.done = (async () => {
    const run = batch.run();
    try {
      for (;;) {
        checkOpen();
        const step = run.next();
        // Before any await: the events go out ahead of the results of requests that finished in this step
        // (their answers are posted from promise callbacks, which run at the next await).
        if (state.outbox.length > 0) post({ id: 0, kind: 'tokens', events: state.outbox.splice(0) });
        if (step.done) return;
        // Idle and open: wait for a submission (or close, or dispose); else let messages in between two steps.
        if (batch.active === 0 && batch.waiting === 0 && !batch.closed && !closing) await new Promise<void>((r) => (state.wake = r));
        else await yieldToEventLoop();
        state.wake = undefined;
      }
    } catch (err) {
      for (const p of state.pending.values()) p.reject(err);
      state.pending.clear();
    } finally {
      batch.close();
      ctx.dispose();
      openBatches.delete(batchId);
    }
  })();
  inflight.add(state.done);
  void state.done.then(() => inflight.delete(state.done));
  openBatches.set(batchId, state);
  return null;
}

/** The exit of one request: undefined (full depth), a shared stateless policy, or a factory (an exit file: one policy per request). */
function requestExit(spec: ExitSpec | undefined): (() => ExitPolicy) | undefined {
  const exit = batchExitFor(spec);
  if (exit === undefined) return undefined;
  return typeof exit === 'function' ? exit : () => exit;
}

function batchSubmitOp(id: number, batchId: number, prompt: string | number[], o: WorkerBatchSubmitOptions, abort: SharedArrayBuffer): Promise<BatchSequenceResult> {
  const state = requireOpenBatch(batchId);
  const tokens = promptTokens(prompt, { addBos: o.addBos, parseSpecial: o.parseSpecial });
  const sampling = resolveSampling(o);
  const exit = requestExit(o.exit);
  const speculative = engineSpeculation(o.speculative);
  for (const [option, policy] of [['exit', exit?.()], ['speculative', draftExitPolicy(speculative)]] as const) {
    const needK = lensTopK(policy);
    if (needK > state.lensK)
      throw new OptionError(option, `the ${option === 'exit' ? 'exit' : 'draft'} policy's fast lens reads the top ${needK} tokens; this batch was opened for at most ${state.lensK} (name its exit file when opening the batch)`);
  }
  const flag = new Int32Array(abort);
  return new Promise<BatchSequenceResult>((resolve, reject) => {
    state.batch.submit({
      tokens,
      maxTokens: o.maxTokens,
      sampling,
      stopAtEos: o.stopAtEos,
      stop: o.stop,
      exit,
      speculative,
      onToken: (event) => state.outbox.push({ id, event }),
      onEnd: (result) => {
        state.pending.delete(id);
        if (result.stopReason === 'aborted') reject(closing ? new AdaInferError('DISPOSED', 'the model has been disposed') : new AbortError('the request was cancelled'));
        else resolve(result);
      },
      cancelled: () => closing || Atomics.load(flag, 0) !== 0,
    });
    state.pending.set(id, { resolve, reject });
    state.wake?.();
  });
}

/** No more submissions; answers once every request in the batch has finished (cancel them first to hurry it). */
async function closeBatchOp(batchId: number): Promise<null> {
  const state = openBatches.get(batchId);
  if (!state) return null;
  state.batch.close();
  state.wake?.();
  await state.done;
  return null;
}

parentPort!.on('message', (msg: RequestMessage) => {
  const done = handle(msg);
  if (msg.op === 'generate' || msg.op === 'classify' || msg.op === 'generateBatch' || msg.op === 'classifyBatch') {
    inflight.add(done);
    done.then(
      () => inflight.delete(done),
      () => inflight.delete(done),
    );
  }
  done.then(
    (value) => post({ id: msg.id, kind: 'result', value }),
    (err) => post({ id: msg.id, kind: 'error', error: serializeError(err) }),
  );
});
