/**
 * The server's Prometheus metrics (prom-client, its own registry: a process may run two servers): requests by
 * endpoint and status, prompt and generated tokens, generated tokens per second over a sliding window, requests
 * running and waiting for a slot, layers run per generated token, time to first token and request duration, and
 * two parts of the time to first token measured on the model's worker: the wait for a batch slot and the prefill
 * (from taking a slot to the end of the step that gave the first token). What the time to first token holds
 * beyond them is the HTTP handling and the messages between the event loop and the worker.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** The window of the tokens/s gauge. */
const RATE_WINDOW_MS = 10_000;

export class ServerMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'endpoint' | 'status'>;
  private readonly promptTokens: Counter;
  private readonly generatedTokens: Counter;
  private readonly layers: Counter;
  private readonly ttft: Histogram;
  private readonly duration: Histogram;
  private readonly queueWait: Histogram;
  private readonly prefill: Histogram;
  /** Generated tokens, by the second they arrived in, for the sliding tokens/s. */
  private readonly recent: { at: number; tokens: number }[] = [];
  private layerSum = 0;
  private tokenSum = 0;

  constructor(state: { running: () => number; waiting: () => number; slots: number }) {
    const registers = [this.registry];
    this.requests = new Counter({ name: 'adainfer_requests_total', help: 'HTTP requests answered, by endpoint and status', labelNames: ['endpoint', 'status'], registers });
    this.promptTokens = new Counter({ name: 'adainfer_prompt_tokens_total', help: 'Prompt tokens of the requests served', registers });
    this.generatedTokens = new Counter({ name: 'adainfer_generated_tokens_total', help: 'Tokens generated', registers });
    this.layers = new Counter({ name: 'adainfer_layers_total', help: 'Transformer layers run for the generated tokens (divide by adainfer_generated_tokens_total for layers per token)', registers });
    const self = this;
    new Gauge({
      name: 'adainfer_generated_tokens_per_second',
      help: `Tokens generated per second, all requests together, over the last ${RATE_WINDOW_MS / 1000} s`,
      registers,
      collect() {
        this.set(self.tokensPerSecond());
      },
    });
    new Gauge({
      name: 'adainfer_mean_layers_per_token',
      help: 'Mean layers run per generated token since the server started',
      registers,
      collect() {
        this.set(self.tokenSum === 0 ? 0 : self.layerSum / self.tokenSum);
      },
    });
    new Gauge({ name: 'adainfer_requests_running', help: 'Generations holding a batch slot', registers, collect() { this.set(state.running()); } });
    new Gauge({ name: 'adainfer_queue_depth', help: 'Generations waiting for a batch slot', registers, collect() { this.set(state.waiting()); } });
    new Gauge({ name: 'adainfer_batch_slots', help: 'Batch slots (--parallel)', registers }).set(state.slots);
    this.ttft = new Histogram({
      name: 'adainfer_time_to_first_token_seconds',
      help: 'From a request arriving to its first generated token',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    const stepBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
    this.queueWait = new Histogram({
      name: 'adainfer_queue_wait_seconds',
      help: 'From a generation reaching the batch on the worker to taking a slot (part of the time to first token)',
      buckets: stepBuckets,
      registers,
    });
    this.prefill = new Histogram({
      name: 'adainfer_prefill_seconds',
      help: 'From a generation taking a batch slot to the end of the step that gave its first token (part of the time to first token)',
      buckets: stepBuckets,
      registers,
    });
    this.duration = new Histogram({
      name: 'adainfer_request_duration_seconds',
      help: 'From a generation request arriving to its last byte',
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
  }

  request(endpoint: string, status: number): void {
    this.requests.inc({ endpoint, status: String(status) });
  }

  prompt(tokens: number): void {
    this.promptTokens.inc(tokens);
  }

  token(exitLayer: number): void {
    this.generatedTokens.inc();
    this.layers.inc(exitLayer);
    this.layerSum += exitLayer;
    this.tokenSum++;
    const now = Date.now();
    const last = this.recent[this.recent.length - 1];
    if (last && now - last.at < 1000) last.tokens++;
    else this.recent.push({ at: now, tokens: 1 });
    this.trim(now);
  }

  firstToken(seconds: number): void {
    this.ttft.observe(seconds);
  }

  /** The worker's timings of a finished generation (lib/engine/batch.ts BatchTimings), in ms. */
  batchTimings(queuedMs: number, prefillMs: number): void {
    this.queueWait.observe(queuedMs / 1000);
    this.prefill.observe(prefillMs / 1000);
  }

  finished(seconds: number): void {
    this.duration.observe(seconds);
  }

  tokensPerSecond(): number {
    const now = Date.now();
    this.trim(now);
    return this.recent.reduce((s, b) => s + b.tokens, 0) / (RATE_WINDOW_MS / 1000);
  }

  private trim(now: number): void {
    while (this.recent.length > 0 && now - this.recent[0].at > RATE_WINDOW_MS) this.recent.shift();
  }
}
