/** A progress bar on stderr (cli-progress) with rate and time left; silent when stderr is not a terminal. */
import { SingleBar, Presets } from 'cli-progress';

export interface Progress {
  /** `info` replaces the bar's own ETA (a caller that knows better: the queue's measured throughput). */
  update(done: number, info?: string): void;
  stop(): void;
}

export function progressBar(label: string, total: number, options: { info?: boolean } = {}): Progress {
  if (!process.stderr.isTTY) return { update: () => undefined, stop: () => undefined };
  const tail = options.info ? '{info}' : 'ETA {eta_formatted}';
  const bar = new SingleBar(
    { format: `${label} [{bar}] {value}/{total} | {percentage}% | ${tail}`, stream: process.stderr, hideCursor: true },
    Presets.shades_classic,
  );
  bar.start(total, 0, { info: '' });
  return { update: (done, info) => bar.update(done, info === undefined ? undefined : { info }), stop: () => bar.stop() };
}
