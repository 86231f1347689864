/**
 * Stop strings: the generation ends where its decoded text first contains one of them, wherever the token
 * boundaries fall (a stop string may span several tokens, or end inside one). The stop string and whatever
 * follows it are not part of the output. While the text ends with what could be the start of a stop string, that
 * part is held back (a stream does not show it), and released once the next text rules the stop string out.
 */
import { OptionError } from '../errors';

/** `stop` as the API takes it: an array of non-empty strings (undefined or empty: no stop strings). */
export function checkStop(stop: unknown): string[] | undefined {
  if (stop === undefined || stop === null) return undefined;
  if (!Array.isArray(stop) || stop.some((s) => typeof s !== 'string' || s.length === 0))
    throw new OptionError('stop', `must be an array of non-empty strings, got ${JSON.stringify(stop)}`);
  return stop.length > 0 ? (stop as string[]) : undefined;
}

export interface StopPush {
  /** Text that is now final: it cannot be part of a stop string. */
  text: string;
  /** The stop string found (the generation ends; `text` is what preceded it); undefined: none yet. */
  stop: string | undefined;
}

/** Finds stop strings in text that arrives in pieces, holding back a possible start of one. */
export class StopMatcher {
  /** Text received but not released: the longest suffix that is a prefix of a stop string. */
  private held = '';
  private readonly longest: number;

  constructor(readonly stops: readonly string[]) {
    this.longest = Math.max(0, ...stops.map((s) => s.length));
  }

  /** True while text is held back. */
  get holding(): boolean {
    return this.held.length > 0;
  }

  /** Adds the next piece of text. After a stop string was found, the matcher must not be pushed again. */
  push(piece: string): StopPush {
    const text = this.held + piece;
    // A match can only start in the held part or the new piece: everything released before could not start one.
    let at = -1;
    let found: string | undefined;
    for (const s of this.stops) {
      const i = text.indexOf(s);
      if (i >= 0 && (at < 0 || i < at)) {
        at = i;
        found = s;
      }
    }
    if (found !== undefined) {
      this.held = '';
      return { text: text.slice(0, at), stop: found };
    }
    const keep = this.partialSuffix(text);
    this.held = text.slice(text.length - keep);
    return { text: text.slice(0, text.length - keep), stop: undefined };
  }

  /** Ends the text without a stop string: releases what was held back. */
  flush(): string {
    const rest = this.held;
    this.held = '';
    return rest;
  }

  /** Length of the longest suffix of `text` that is a proper prefix of some stop string. */
  private partialSuffix(text: string): number {
    for (let n = Math.min(text.length, this.longest - 1); n > 0; n--) {
      const tail = text.slice(text.length - n);
      if (this.stops.some((s) => s.length > n && s.startsWith(tail))) return n;
    }
    return 0;
  }
}
